"""A real worker whose log is a file writes JSON, one object per line
(``USERPULSE_LOG_FORMAT=auto``, the default): every line parses, Faust's
multi-line tables included, and the line about a dead letter names the
record it is about (topic, partition, offset, code)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from agents.kafka.admin import ensure_topics
from agents.kafka.producer import EventProducer, new_event
from agents.settings import Settings
from streams import topics
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e


def test_a_worker_logging_to_a_file_writes_one_json_object_per_line(
    settings: Settings, tmp_path: Path
) -> None:
    settings = replace(settings, log_format="auto")
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    worker = Worker(settings, log)
    try:
        with EventProducer(settings) as producer:
            producer.send(new_event("ana", "signed_up", {}))
            producer.send_raw(b"broken", b"{not json")
            producer.flush()
        wait_for(lambda: counters(settings)["dead_letters"] == 1, 90, worker, "the dead letter")
    finally:
        assert worker.stop() == 0, worker.tail()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    docs = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert len(docs) > 10
    assert all({"time", "level", "logger", "message", "pid"} <= set(d) for d in docs)
    assert any("\n" in d["message"] for d in docs)  # Faust's tables, kept in one line
    [dead] = [d for d in docs if d["message"].startswith("dead-lettered")]
    assert dead["topic"] == settings.topic(topics.USER_EVENTS)
    assert dead["code"] == "not_json" and isinstance(dead["partition"], int)
    assert isinstance(dead["offset"], int) and dead["offset"] >= 0
