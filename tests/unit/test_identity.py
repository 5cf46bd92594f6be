from __future__ import annotations

from streams.derived import Alias, Forward, Merge, ReferralCredit, decode_derived, encode_derived
from streams.events import Event
from streams.identity import aliases_to_send, forward_to, merge_states, on_alias
from streams.policy import DEFAULT_POLICY
from streams.state import apply
from streams.userstate import STAGE_MERGED, UserState


def ev(event_id: str, ts: int, user: str | None = None, anon: str | None = None) -> Event:
    return Event(
        event_id=event_id, type="page_viewed", timestamp_ms=ts, user_id=user, anonymous_id=anon
    )


def history(events: list[Event]) -> UserState:
    state: UserState | None = None
    for e in events:
        state = apply(state, e)
    assert state is not None
    return state


def merge_states_(user: UserState | None, merge: Merge) -> UserState | None:
    return merge_states(user, merge, DEFAULT_POLICY)


def test_an_event_with_both_ids_asks_the_anonymous_partition_once() -> None:
    link = Event("e1", "user_identified", 5, user_id="u1", anonymous_id="a1")
    assert aliases_to_send(None, link) == [Alias("u1", "a1", link.timestamp_ms)]
    merged = UserState("u1", 1, 5, 1, merged_from=("a1",))
    assert aliases_to_send(merged, link) == []
    assert aliases_to_send(None, ev("e2", 5, user="u1")) == []
    assert aliases_to_send(None, ev("e3", 5, anon="a1")) == []


def test_the_full_merge_sums_the_histories_and_is_idempotent() -> None:
    anon = history([ev("a-1", 100, anon="a1"), ev("a-2", 200, anon="a1")])
    user = history([Event("u-1", "user_identified", 300, user_id="u1", anonymous_id="a1")])

    marked, merge = on_alias(anon, Alias("u1", "a1", 300))
    assert marked.merged_into == "u1"
    assert merge == Merge("u1", "a1", anon)  # the snapshot is the history as it was

    merged = merge_states_(user, merge)
    assert merged is not None
    assert (merged.first_seen_ms, merged.last_seen_ms, merged.event_count) == (100, 300, 3)
    assert merged.user_id == "u1"
    assert merged.merged_from == ("a1",)
    assert merge_states_(merged, merge) is merged  # a redelivered Merge changes nothing

    # a redelivered Alias answers with the same snapshot
    again_marked, again = on_alias(marked, Alias("u1", "a1", 300))
    assert again_marked is marked and again == merge


def test_an_anonymous_id_without_history_gets_a_marker_so_later_events_follow() -> None:
    marker, merge = on_alias(None, Alias("u1", "a9", 50))
    assert merge.state is None
    assert marker.first_seen_ms == marker.last_seen_ms == 50  # the linking event's time
    assert (marker.stage, marker.merged_into, marker.event_count) == (STAGE_MERGED, "u1", 0)
    later = ev("a-late", 60, anon="a9")
    forward = forward_to(marker, later)
    assert forward is not None and forward.user_id == "u1"
    assert forward.event.key == "u1" and forward.event.event_id == "a-late"
    user = history([ev("u-1", 40, user="u1")])
    after = apply(user, forward.event)
    assert after is not None and after.event_count == 2
    assert apply(after, forward.event) is after  # forwarded twice: counted once


def test_merge_keeps_the_dedup_window_of_both() -> None:
    anon = history([ev("a-1", 1, anon="a1")])
    user = history([ev("u-1", 2, user="u1")])
    merged = merge_states_(user, Merge("u1", "a1", anon))
    assert merged is not None
    assert apply(merged, ev("a-1", 1, user="u1")) is merged


def test_merging_into_a_user_with_no_state_adopts_the_history() -> None:
    anon = history([ev("a-1", 1, anon="a1")])
    merged = merge_states_(None, Merge("u1", "a1", anon))
    assert merged is not None and merged.user_id == "u1" and merged.event_count == 1
    assert merge_states_(None, Merge("u1", "a1", None)) is None


def test_derived_messages_round_trip() -> None:
    anon = history([ev("a-1", 1, anon="a1")])
    for message in (
        Alias("u1", "a1"),
        Merge("u1", "a1", anon),
        Merge("u1", "a1", None),
        Forward("u1", ev("x", 5, user="u1", anon="a1")),
        ReferralCredit("r1", "u1", 5, "e9"),
    ):
        assert decode_derived(encode_derived(message)) == message
