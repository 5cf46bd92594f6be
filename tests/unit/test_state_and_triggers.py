from __future__ import annotations

import orjson
import pytest

from streams import topics
from streams.codec import decode_state, encode_state
from streams.errors import StateError
from streams.events import Event
from streams.profile import profile_fields
from streams.state import apply
from streams.triggers import TYPE_STAGE_CHANGED, decide_on_event, encode_trigger, trigger_id_for
from streams.userstate import DEDUP_WINDOW, STAGE_ACQUIRED


def ev(event_id: str, ts: int, user: str = "u1", etype: str = "page_viewed") -> Event:
    return Event(event_id=event_id, type=etype, timestamp_ms=ts, user_id=user)


def test_a_new_user_is_acquired_on_first_event() -> None:
    s = apply(None, ev("e1", 1_000))
    assert (s.user_id, s.stage, s.event_count) == ("u1", STAGE_ACQUIRED, 1)
    assert s.first_seen_ms == s.last_seen_ms == 1_000


def test_events_out_of_order_keep_first_and_last_seen_by_event_time() -> None:
    s = apply(apply(apply(None, ev("e1", 5_000)), ev("e2", 9_000)), ev("e3", 1_000))
    assert (s.first_seen_ms, s.last_seen_ms, s.event_count) == (1_000, 9_000, 3)


def test_the_same_event_delivered_twice_changes_nothing() -> None:
    s = apply(None, ev("e1", 1_000))
    again = apply(s, ev("e1", 1_000))
    assert again is s


def test_a_redelivery_within_the_window_changes_nothing_even_after_other_events() -> None:
    s = apply(None, ev("e1", 1_000))
    for i in range(2, DEDUP_WINDOW + 1):
        s = apply(s, ev(f"e{i}", 1_000 + i))
    assert apply(s, ev("e1", 1_000)) is s  # e1 is the oldest still remembered
    s = apply(s, ev("e-new", 5_000))
    assert len(s.recent_events) == DEDUP_WINDOW
    assert apply(s, ev("e1", 1_000)).event_count == s.event_count + 1  # fell out of the window


def test_state_round_trips_through_bytes_and_rejects_garbage() -> None:
    s = apply(apply(None, ev("e1", 1)), ev("e2", 2))
    assert decode_state(encode_state(s)) == s
    with pytest.raises(StateError):
        decode_state(b"{not json")
    with pytest.raises(StateError):
        decode_state(orjson.dumps({"user_id": "u1"}))


def test_first_seen_emits_one_lifecycle_trigger_with_a_deterministic_id() -> None:
    e = ev("e1", 1_000)
    new = apply(None, e)
    [t] = decide_on_event(None, new, e)
    assert t.type == TYPE_STAGE_CHANGED and t.topic == topics.TRIGGERS_LIFECYCLE
    assert t.reason["rule"] == "first_seen"
    assert (t.reason["from"], t.reason["to"]) == (None, STAGE_ACQUIRED)
    assert t.trigger_id == trigger_id_for(TYPE_STAGE_CHANGED, "u1", STAGE_ACQUIRED)
    assert t.profile["stage"] == STAGE_ACQUIRED
    # a replay of the same history gives the same id
    [again] = decide_on_event(None, apply(None, e), e)
    assert again.trigger_id == t.trigger_id


def test_later_events_in_the_same_stage_emit_nothing() -> None:
    first = apply(None, ev("e1", 1))
    second = apply(first, ev("e2", 2))
    assert decide_on_event(first, second, ev("e2", 2)) == []


def test_trigger_ids_differ_by_user_type_and_anchor() -> None:
    ids = {
        trigger_id_for("a", "u1", 1),
        trigger_id_for("a", "u2", 1),
        trigger_id_for("b", "u1", 1),
        trigger_id_for("a", "u1", 2),
    }
    assert len(ids) == 4


def test_encoded_trigger_follows_the_contract() -> None:
    e = ev("e1", 1_000)
    [t] = decide_on_event(None, apply(None, e), e)
    doc = orjson.loads(encode_trigger(t, emitted_at_ms=2_000))
    assert set(doc) == set(
        [
            "trigger_id",
            "type",
            "user_id",
            "occurred_at",
            "emitted_at",
            "reason",
            "profile",
            "payload",
        ]
    )
    assert (doc["occurred_at"], doc["emitted_at"], doc["user_id"]) == (1_000, 2_000, "u1")


def test_profile_fields_are_flat_strings_with_a_version() -> None:
    s = apply(None, ev("e1", 1_000))
    fields = profile_fields(s, version=7)
    assert fields["version"] == "7" and fields["user_id"] == "u1"
    assert all(isinstance(v, str) for v in fields.values())
