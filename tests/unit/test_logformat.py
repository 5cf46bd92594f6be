"""Worker log lines as JSON (agents/worker/logformat.py)."""

from __future__ import annotations

import io
import logging

import orjson

from agents.worker.logformat import JsonFormatter, wants_json


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "agents.worker.pipeline", logging.INFO, __file__, 1, message, args, None
    )
    rec.__dict__.update(extra)
    rec.created = 1_767_225_600.25
    return rec


def test_a_line_is_one_json_object_with_the_record_it_is_about() -> None:
    line = JsonFormatter().format(
        record("dead-lettered %s[%d]@%d", "t-user-events", 3, 17, topic="t-user-events",
               partition=3, offset=17, code="not_json")
    )  # fmt: skip
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc["time"] == "2026-01-01T00:00:00.250Z"
    assert doc["level"] == "INFO" and doc["logger"] == "agents.worker.pipeline"
    assert doc["message"] == "dead-lettered t-user-events[3]@17"
    assert (doc["topic"], doc["partition"], doc["offset"], doc["code"]) == (
        "t-user-events", 3, 17, "not_json",
    )  # fmt: skip


def test_a_multi_line_message_and_a_traceback_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("+table+\n| a |\n+---+")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc["message"] == "+table+\n| a |\n+---+"
    assert "ValueError: boom" in doc["exception"] and "topic" not in doc


def test_auto_is_json_unless_the_log_goes_to_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_json("auto", io.StringIO()) is True
    assert wants_json("auto", Terminal()) is False
    assert wants_json("json", Terminal()) is True
    assert wants_json("text", io.StringIO()) is False
