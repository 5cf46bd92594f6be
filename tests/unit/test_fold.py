"""The batch fold and the fast paths under it: a batch of a user's events
folds to exactly what the events give one at a time, and each shortcut
(evolve, next_deadline, the cached UTC offsets of quiet_until) equals the
slow way it replaces."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.churn import win_back
from streams.delivery import deliverable_at, quiet_until
from streams.derived import DerivedMessage
from streams.engine import fold as fold_events
from streams.events import Event
from streams.identity import aliases_to_send, erasures_to_send, forward_to
from streams.policy import DAY_MS, DEFAULT_POLICY, DeliveryPolicy, Policy, precomputed
from streams.referral import credits_to_send
from streams.state import apply, erased_marker, new_state
from streams.timed import next_deadline, pending, run_until
from streams.triggers import Trigger, decide_on_event
from streams.userstate import UserState, evolve
from tests.unit.test_state_properties import T0, histories

POLICY = DEFAULT_POLICY


def one_at_a_time(
    state: UserState | None, events: list[Event], policy: Policy
) -> tuple[UserState | None, int, list[Trigger], list[DerivedMessage]]:
    """The worker before batching: each event on its own, stored after each."""
    changes = 0
    triggers: list[Trigger] = []
    derived: list[DerivedMessage] = []
    for event in events:
        forward = forward_to(state, event)
        if forward is not None:
            derived.append(forward)
            continue
        caught, timed = run_until(state, event.timestamp_ms - 1, policy)
        new = apply(caught, event, policy)
        if new is caught and not timed:
            continue
        triggers += [
            *timed,
            *decide_on_event(caught, new, event),
            *win_back(caught, new, event, policy.delivery),
        ]
        derived += [*aliases_to_send(caught, event), *credits_to_send(caught, new, event)]
        if new is None:
            derived += erasures_to_send(caught, event.timestamp_ms)
            new = erased_marker(event.timestamp_ms, caught)
        state = new
        changes += 1
    return state, changes, triggers, derived


@st.composite
def batches(draw: st.DrawFn) -> list[Event]:
    """A history in time order, with redeliveries and an erasure mixed in."""
    events = sorted(draw(histories()), key=lambda e: e.timestamp_ms)
    if events and draw(st.booleans()):
        events.insert(draw(st.integers(0, len(events))), draw(st.sampled_from(events)))
    if events and draw(st.booleans()):
        at = draw(st.integers(0, len(events) - 1))
        erase = Event("erase", "user_deleted", events[at].timestamp_ms, user_id="u")
        events.insert(at + 1, erase)
    return events


@settings(max_examples=300, deadline=None)
@given(batches())
def test_a_batch_folds_to_what_its_events_give_one_at_a_time(events: list[Event]) -> None:
    state, changes, triggers, derived = one_at_a_time(None, events, POLICY)
    folded = fold_events(None, events, POLICY)
    assert folded.state == state
    assert folded.changes == changes
    assert folded.triggers == triggers
    assert folded.derived == derived
    # the erasure always follows an event of the user's: it erases someone
    assert folded.erased == any(e.type == "user_deleted" for e in events)


@settings(max_examples=100, deadline=None)
@given(batches(), st.integers(0, 40))
def test_a_batch_split_anywhere_folds_the_same(events: list[Event], cut: int) -> None:
    """Two batches (stored in between) give what one batch gives."""
    whole = fold_events(None, events, POLICY)
    first = fold_events(None, events[:cut], POLICY)
    second = fold_events(first.state, events[cut:], POLICY)
    assert second.state == whole.state
    assert first.changes + second.changes == whole.changes
    assert first.triggers + second.triggers == whole.triggers


def test_redelivered_events_change_nothing() -> None:
    events = [
        Event("a", "session_started", T0, user_id="u"),
        Event("b", "page_viewed", T0 + 1000, user_id="u"),
    ]
    once = fold_events(None, events, POLICY)
    again = fold_events(once.state, events, POLICY)
    assert again.changes == 0 and again.triggers == [] and again.state is once.state


def test_erasing_a_user_never_seen_stores_nothing() -> None:
    folded = fold_events(None, [Event("x", "user_deleted", T0, user_id="u")], POLICY)
    assert folded.changes == 0 and folded.state is None and not folded.erased


def test_the_fold_catches_up_deadlines_before_each_event() -> None:
    """A cart left for two days, then a page view: the reminders that fell due
    in between are decided at their own time, before the page view."""
    add = Event(
        "a",
        "product_added",
        T0,
        user_id="u",
        properties={"product_id": "p", "quantity": 1, "price": 50.0, "cart_id": "c"},
    )
    view = Event("b", "page_viewed", T0 + 2 * DAY_MS, user_id="u")
    folded = fold_events(None, [add, view], POLICY)
    reminders = [t for t in folded.triggers if t.type == "cart_abandoned"]
    assert reminders, folded.triggers
    assert all(t.occurred_at_ms < view.timestamp_ms for t in reminders)


# ---- the fast paths ------------------------------------------------------------
VALUES: dict[str, Any] = {
    "event_count": st.integers(0, 10**6),
    "stage": st.sampled_from(["acquired", "activated", "retained"]),
    "revenue": st.floats(0, 1e6, allow_nan=False),
    "signup_ms": st.none() | st.integers(0, 2 * T0),
    "recent_events": st.lists(st.text("abcdef", min_size=1), max_size=3).map(tuple),
    "revision": st.integers(0, 10**9),
}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=len(VALUES)), st.data())
def test_evolve_equals_dataclasses_replace(keys: dict[str, None], data: st.DataObject) -> None:
    changes = {k: data.draw(VALUES[k]) for k in keys}
    base = new_state("u", T0)
    assert evolve(base, changes) == replace(base, **changes)
    assert evolve(base, {}) == base and evolve(base, {}) is not base


def test_evolve_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="no field"):
        evolve(new_state("u", T0), {"nonsense": 1})


def test_evolve_covers_every_field() -> None:
    base = new_state("u", T0)
    for f in fields(UserState):
        assert getattr(evolve(base, {}), f.name) == getattr(base, f.name)


def deadline_the_slow_way(state: UserState, policy: Policy) -> int | None:
    """next_deadline from the rules themselves: each marketing rule's pending
    trigger moved past the delivery rules, and the times at which health and
    the RFM recency score change by themselves."""
    pre = precomputed(policy)
    times = [deliverable_at(d.due_ms, state, policy.delivery) for d in pending(state, policy)]
    changes = [
        state.first_seen_ms + pre.new_ms,
        state.last_seen_ms + pre.active_ms,
        state.last_seen_ms + pre.dormant_ms,
    ]
    if state.resurrected_ms is not None:
        changes.append(state.resurrected_ms + pre.resurrected_ms)
    if state.last_order_ms is not None:
        changes += [state.last_order_ms + recency + 1 for recency in pre.recency_ms]
    times += [at for at in changes if at > state.evaluated_ms]
    return min(times, default=None)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_next_deadline_is_the_earliest_time_a_rule_is_due(events: list[Event]) -> None:
    """next_deadline inlines the rules' due times (it runs once per event)."""
    state: UserState | None = None
    for event in sorted(events, key=lambda e: e.timestamp_ms):
        state = apply(state, event, POLICY)
        if state is not None:
            assert next_deadline(state, POLICY) == deadline_the_slow_way(state, POLICY)


#: one marketing trigger a day and long quiet hours: most due times are deferred
CAPPED = replace(POLICY, delivery=replace(POLICY.delivery, daily_cap=1, quiet_hours=(18, 10)))


@settings(max_examples=200, deadline=None)
@given(histories(), st.lists(st.integers(0, 40 * DAY_MS), min_size=1, max_size=4))
def test_next_deadline_with_triggers_sent_and_deferred(
    events: list[Event], waits: list[int]
) -> None:
    """The same on states that have sent triggers (reminders, nudges, the
    day's count at its cap) and under a policy that defers most of them: a
    due time moved past quiet hours or the cap must not hide a later one."""
    state: UserState | None = None
    for event in sorted(events, key=lambda e: e.timestamp_ms):
        state = apply(state, event, CAPPED)
    assert state is not None
    at = state.last_seen_ms
    for wait in waits:
        at += wait
        state, _ = run_until(state, at, CAPPED)
        assert state is not None
        assert next_deadline(state, CAPPED) == deadline_the_slow_way(state, CAPPED)


def test_a_deferred_reminder_does_not_hide_an_earlier_change_of_health() -> None:
    """A cart reminder due an hour before the user stops being new, but in
    quiet hours: deferred to the morning, it is not the next deadline — the
    change of health at the end of the first week is."""
    first = 1_700_089_200_000  # 2023-11-15T23:00:00Z
    week = 7 * DAY_MS
    seen = Event("e1", "page_viewed", first, user_id="u1")
    added = Event(
        "e2",
        "product_added",
        first + week - 2 * 3_600_000,  # reminder due 22:00 UTC: quiet until 08:00
        user_id="u1",
        properties={"product_id": "p1", "quantity": 1, "price": 10.0, "cart_id": "c1"},
    )
    state = apply(apply(None, seen, POLICY), added, POLICY)
    assert state is not None
    assert next_deadline(state, POLICY) == first + week == deadline_the_slow_way(state, POLICY)


def _quiet_until_reference(at_ms: int, state: UserState, delivery: DeliveryPolicy) -> int | None:
    """quiet_until as it was, with a datetime conversion per call."""
    import zoneinfo

    start, end = delivery.quiet_hours
    zone = zoneinfo.ZoneInfo(state.timezone or delivery.default_timezone)
    local = datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(zone)
    hour = local.hour
    quiet = start <= hour < end if start < end else (hour >= start or hour < end)
    if not quiet:
        return None
    end_day = local.date() if hour < end else local.date() + timedelta(days=1)
    end_local = datetime(end_day.year, end_day.month, end_day.day, end, tzinfo=local.tzinfo)
    return int(end_local.timestamp() * 1000)


ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=500, deadline=None)
@given(
    st.integers(1_600_000_000_000, 1_900_000_000_000),
    st.sampled_from(ZONES),
    st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda h: h[0] != h[1]),
)
def test_quiet_until_with_cached_offsets_equals_the_datetime_way(
    at_ms: int, zone: str, hours: tuple[int, int]
) -> None:
    """Across daylight-saving changes too (Lord Howe shifts by half an hour)."""
    state = replace(new_state("u", T0), timezone=zone)
    delivery = DeliveryPolicy(quiet_hours=hours)
    assert quiet_until(at_ms, state, delivery) == _quiet_until_reference(at_ms, state, delivery)


def test_quiet_until_around_a_daylight_saving_change() -> None:
    """Berlin, 2026-03-29: 02:00 CET became 03:00 CEST (01:00 UTC)."""
    state = replace(new_state("u", T0), timezone="Europe/Berlin")
    delivery = DeliveryPolicy(quiet_hours=(21, 8))
    switch = int(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp() * 1000)
    for at in range(switch - 3_600_000, switch + 3_600_000, 60_000):
        assert quiet_until(at, state, delivery) == _quiet_until_reference(at, state, delivery)
