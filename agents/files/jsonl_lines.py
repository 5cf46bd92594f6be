"""One line of a JSON Lines history as a :class:`~agents.files.rows.MappedRow`:
an event, or a topic record holding one (the two kinds of file are described
in :mod:`agents.files.jsonl`). :class:`LineReader` remembers which kind the
file is and each partition's latest offset; a line it cannot take becomes
the :class:`~streams.errors.EventError` that rejects it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

import orjson

from agents.files.rows import MappedRow
from streams.datasets import Mapped
from streams.errors import EventError
from streams.events import parse_event

#: Codes a line can get from reading, beyond the contract's own (``not_json``,
#: ``not_object``, ``invalid_utf8``, ``too_large``, ``missing_field``,
#: ``wrong_type``) and the worker's ``key_mismatch``.
READING_CODES: Final = {
    "offset_order": "a topic record's offset is not after the previous one of its partition",
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


class LineReader:
    """Turns lines into MappedRows; remembers the file's kind and each partition's offset."""

    def __init__(self) -> None:
        #: None until the first JSON object says whether this is a topic export.
        self.records: bool | None = None
        #: (topic, partition) → (offset, line) of its latest record.
        self.positions: dict[tuple[str | None, int], tuple[int, int]] = {}

    def read(self, number: int, raw: bytes) -> MappedRow:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is not dict:
            return _rejected(number, {}, raw, _line_error(raw))
        if self.records is None:
            self.records = "value" in doc or "offset" in doc
        if self.records:
            return self._record(number, raw, doc)
        if "value" in doc or "offset" in doc:
            name = "value" if "value" in doc else "offset"
            return _rejected(
                number,
                {},
                raw,
                EventError(
                    "unknown_field",
                    f"$.{name}",
                    "this line is a topic record, but the file is one of events (its first "
                    "object is an event): export the topic whole, or list events only",
                ),
            )
        return MappedRow(number, {}, [_mapped(doc)])

    def _record(self, number: int, raw: bytes, record: dict[str, Any]) -> MappedRow:
        row: dict[str, str] = {}
        try:
            if "value" not in record and ("event_id" in record or "type" in record):
                raise EventError(
                    "missing_field",
                    "$.value",
                    "this line is an event, but the file is a topic export (its first object "
                    "is a record): every line must be a record with the event as its value",
                )
            topic = record.get("topic")
            if topic is not None:
                if type(topic) is not str:
                    raise _wrong_type("topic", "a string", topic)
                row["topic"] = topic
            partition = _position(record, "partition")
            row["partition"] = str(partition)
            offset = _position(record, "offset")
            row["offset"] = str(offset)
            has_key = "key" in record
            key = record.get("key")
            if key is not None:
                if type(key) is not str:
                    raise _wrong_type("key", "a string (the record key as text) or null", key)
                row["key"] = key
            self._check_order(topic, partition, offset, number)
            doc = _value(record)
            mapped = _mapped(doc)
            if has_key:
                _check_key(key, mapped)
        except EventError as error:
            return _rejected(number, row, raw, error)
        return MappedRow(number, row, [mapped])

    def _check_order(self, topic: str | None, partition: int, offset: int, number: int) -> None:
        where = (topic, partition)
        previous = self.positions.get(where)
        if previous is not None and offset <= previous[0]:
            before, line = previous
            named = f"partition {partition}" + (f" of {topic}" if topic is not None else "")
            what = "repeats" if offset == before else "comes after"
            raise EventError(
                "offset_order",
                "$.offset",
                f"offset {offset} of {named} {what} offset {before} (line {line}): a topic "
                "export lists each partition's records once, in offset order",
            )
        self.positions[where] = (offset, number)


def _position(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if value is None:
        raise EventError(
            "missing_field",
            f"$.{name}",
            f"a topic record needs {name}: the record's {name} number in the topic",
        )
    if type(value) is not int or value < 0:
        raise _wrong_type(name, "a whole number ≥ 0", value)
    return value


def _value(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("value")
    if value is None:
        problem = "its value is null (a tombstone)" if "value" in record else "it has no value"
        raise EventError(
            "missing_field", "$.value", f"a topic record needs value, the event: {problem}"
        )
    if type(value) is str:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EventError(
                "not_json", "$.value", f"value is a string that is not JSON: {exc}"
            ) from None
    if type(value) is not dict:
        raise EventError(
            "not_object",
            "$.value",
            f"value must be the event, a JSON object (or a string holding one), got {_kind(value)}",
        )
    return cast(dict[str, Any], value)


def _check_key(key: str | None, mapped: Mapped) -> None:
    """A record key that is not the event's user is rejected, as the worker does
    (streams/engine.py) — once the event is valid: the worker checks the key
    after parsing, so an invalid event keeps its own rejection."""
    if key == mapped.user_id:
        return
    try:
        event = parse_event(orjson.dumps(mapped.doc), now_ms=mapped.timestamp_ms + 1)
    except EventError:
        return  # validation rejects it with its own code
    if key != event.key:
        raise EventError(
            "key_mismatch",
            "$.user_id",
            f"record key {key!r} must equal the user_id (or anonymous_id) {event.key!r}",
        )


def _mapped(doc: dict[str, Any]) -> Mapped:
    user = doc.get("user_id") or doc.get("anonymous_id")
    return Mapped(_event_time(doc.get("timestamp")), user if type(user) is str else "", doc)


def _event_time(value: Any) -> int:
    """The event time ``parse_event`` reads from ``timestamp``; 0 where it would
    reject the timestamp (the event then fails validation anyway)."""
    if type(value) is int:
        return value
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return 0
        if parsed.tzinfo is not None:
            return (parsed - _EPOCH) // _ONE_MS
    return 0


def _line_error(raw: bytes) -> EventError:
    """Why a line that is not a JSON object is rejected: the error ``userpulse
    produce`` gives it (``invalid_utf8``, ``not_json``, ``not_object``, ``too_large``)."""
    try:
        parse_event(raw, now_ms=0)
    except EventError as error:
        return error
    return EventError("not_object", "$", "expected a JSON object")  # not reached


def _rejected(number: int, row: dict[str, str], raw: bytes, error: EventError) -> MappedRow:
    row["input"] = raw.decode("utf-8", errors="backslashreplace")
    return MappedRow(number, row, error)


def _wrong_type(name: str, expected: str, value: Any) -> EventError:
    shown = orjson.dumps(value).decode()
    if len(shown) > 40:
        shown = shown[:39] + "…"
    return EventError(
        "wrong_type", f"$.{name}", f"{name} must be {expected}, got {_kind(value)} {shown}"
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"
