"""`userpulse tail`'s lines (agents/commands/tail.py): one line a record,
ISO-8601 UTC times, every kind said in words; --json one object a line."""

from __future__ import annotations

import orjson

from agents.commands.tail import as_json, iso, line
from agents.kafka.deadletters import dead_letter_headers
from agents.kafka.reader import Record
from streams.errors import EventError

MS = 1_767_225_600_250  # 2026-01-01T00:00:00.250Z


def record(value: bytes | None, headers: dict[str, bytes] | None = None) -> Record:
    return Record("t-triggers.lifecycle", 3, 128, b"u1", value, headers or {})


def test_times_are_iso_utc_with_milliseconds() -> None:
    assert iso(MS) == "2026-01-01T00:00:00.250Z"
    assert iso("not a time") == "not a time" and iso(2**70) == str(2**70)


def test_a_trigger_is_one_line_with_its_change() -> None:
    doc = {
        "trigger_id": "0123456789abcdef0123",
        "type": "stage_changed",
        "user_id": "u1",
        "occurred_at": MS,
        "emitted_at": MS + 5,
        "reason": {"from": "acquired", "to": "activated", "rule": "activation"},
        "profile": {"stage": "activated", "ltv": 0.0, "consent": {}},
        "payload": {},
    }
    shown = line(record(orjson.dumps(doc)))
    assert shown == (
        "2026-01-01T00:00:00.250Z  p3@128  stage_changed  user=u1  acquired -> activated"
        "  rule=activation  id=0123456789ab…"
    )
    reminder = {**doc, "type": "cart_abandoned", "reason": {"step": 2}, "payload": {"value": 9.5}}
    assert "cart_abandoned  user=u1  step 2, cart value 9.5" in line(record(orjson.dumps(reminder)))


def test_a_dead_letter_names_its_reason_and_source() -> None:
    error = EventError("bad_timestamp", "$.timestamp", "timestamp 17 looks like epoch seconds")
    headers = dict(dead_letter_headers(error, "t-user-events", 1, 42))
    shown = line(record(b"{not json", headers))
    assert shown == (
        "p3@128  dead letter  bad_timestamp at $.timestamp: timestamp 17 looks like epoch "
        "seconds  (from t-user-events[1]@42)"
    )
    assert "\n" not in shown


def test_an_event_and_anything_else_take_one_line_too() -> None:
    event = {"event_id": "e1", "type": "page_viewed", "timestamp": MS, "user_id": "u1"}
    assert line(record(orjson.dumps(event))) == (
        "2026-01-01T00:00:00.250Z  p3@128  page_viewed  user=u1"
    )
    long = b"x" * 500
    assert line(record(long)) == "p3@128  key=u1  " + "x" * 200 + "…"


def test_json_is_the_record_as_it_is_on_one_line() -> None:
    doc = {"type": "page_viewed", "timestamp": MS}
    shown = as_json(record(orjson.dumps(doc), {"h": b"v"}))
    assert "\n" not in shown
    assert orjson.loads(shown) == {
        "topic": "t-triggers.lifecycle",
        "partition": 3,
        "offset": 128,
        "key": "u1",
        "value": doc,
        "headers": {"h": "v"},
    }
    assert orjson.loads(as_json(record(b"{broken")))["value"] == "{broken"
