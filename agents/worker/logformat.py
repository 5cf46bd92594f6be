"""A worker's log lines as JSON, one object per line, when its log does not
go to a terminal (``USERPULSE_LOG_FORMAT=auto``, the default) or when asked
(``json``): what a log shipper reads without parsing free text, with a
multi-line message or traceback kept in one line.

Each line: ``time`` (ISO-8601 UTC, ms), ``level``, ``logger``, ``message``,
``pid``; a record about an input record adds ``topic``, ``partition`` and
``offset`` (and ``code`` for a dead letter) — passed as ``extra=`` by the
code that logs it; an exception adds ``exception`` (the formatted traceback).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO

import orjson

#: the fields a record may carry about the input record it concerns
RECORD_FIELDS = ("topic", "partition", "offset", "code")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in RECORD_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


def wants_json(setting: str, stream: IO[str] | None = None) -> bool:
    """``USERPULSE_LOG_FORMAT``: json, text, or auto (json unless ``stream``,
    default stderr, is a terminal)."""
    if setting != "auto":
        return setting == "json"
    out = stream if stream is not None else sys.stderr
    return not (hasattr(out, "isatty") and out.isatty())


def install(logger: logging.Logger) -> None:
    """Every handler of ``logger`` (the root) writes JSON."""
    formatter = JsonFormatter()
    for handler in logger.handlers:
        handler.setFormatter(formatter)
