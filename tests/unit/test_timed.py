"""Timed triggers with an injected clock: every rule's edges."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streams.activation import TYPE_ACTIVATION_STALLED
from streams.cart import TYPE_CART_ABANDONED
from streams.churn import TYPE_CHURN_WARNING, TYPE_WIN_BACK, win_back
from streams.delivery import quiet_until
from streams.events import Event
from streams.partition import TimerIndex
from streams.policy import (
    DAY_MS,
    ActivationPolicy,
    CartPolicy,
    ChurnPolicy,
    DeliveryPolicy,
    Policy,
    StagePolicy,
)
from streams.state import apply
from streams.timed import decide_on_time, next_deadline, run_until
from streams.triggers import Trigger
from streams.userstate import UserState

T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z, a UTC midnight
H = 3_600_000
NO_QUIET = DeliveryPolicy(quiet_hours=(), daily_cap=0)
POLICY = Policy(
    cart=CartPolicy(reminder_delays_s=(3600, 86400)),
    activation=ActivationPolicy(stalled_after_s=(86400,)),
    churn=ChurnPolicy(inactivity_s=0),
    delivery=NO_QUIET,
)


class User:
    def __init__(self, policy: Policy = POLICY, user: str = "u1", **context: Any) -> None:
        self.policy = policy
        self.user = user
        self.state: UserState | None = None
        self.context = {"channel": "web", **context}
        self.n = 0

    def on(self, etype: str, at_ms: int, **props: Any) -> list[Trigger]:
        self.n += 1
        event = Event(
            f"e{self.n}", etype, at_ms, user_id=self.user, properties=props, context=self.context
        )
        caught, timed = run_until(self.state, at_ms - 1, self.policy)
        new = apply(caught, event, self.policy)
        self.state = new
        return timed + win_back(caught, new, event, self.policy.delivery)

    def until(self, at_ms: int) -> list[Trigger]:
        self.state, fired = run_until(self.state, at_ms, self.policy)
        return fired

    def consent(self, at_ms: int, **channels: bool) -> None:
        self.on("consent_updated", at_ms, channels=channels)


def add(user: User, at_ms: int, cart: str = "c1", product: str = "p1") -> None:
    user.on("product_added", at_ms, product_id=product, quantity=1, price=10.0, cart_id=cart)


def of_type(triggers: list[Trigger], kind: str) -> list[Trigger]:
    return [t for t in triggers if t.type == kind]


def test_cart_reminders_fire_at_their_deadlines_exactly_once_and_in_order() -> None:
    u = User()
    u.consent(T0, email=True)
    add(u, T0)
    assert u.state is not None
    assert next_deadline(u.state, POLICY) == T0 + H
    assert of_type(u.until(T0 + H - 1), TYPE_CART_ABANDONED) == []  # just before
    [first] = of_type(u.until(T0 + H), TYPE_CART_ABANDONED)  # at
    assert first.occurred_at_ms == T0 + H and first.payload["step"] == 1
    assert first.payload["value"] == 10.0 and first.payload["items"][0]["product_id"] == "p1"
    assert first.payload["delivery"] == {
        "channel": "email",
        "consent": True,
        "deliverable": True,
        "deferred_ms": 0,
    }
    assert of_type(u.until(T0 + 2 * H), TYPE_CART_ABANDONED) == []  # after: not again
    [second] = of_type(u.until(T0 + DAY_MS), TYPE_CART_ABANDONED)
    assert second.payload["step"] == 2 and second.trigger_id != first.trigger_id
    assert of_type(u.until(T0 + 30 * DAY_MS), TYPE_CART_ABANDONED) == []  # the sequence is over


def test_an_order_or_an_emptied_cart_stops_the_sequence_and_a_new_change_restarts_it() -> None:
    u = User()
    add(u, T0)
    u.on(
        "order_completed", T0 + 30 * 60_000, order_id="o", revenue=10.0, currency="EUR", products=[]
    )
    assert of_type(u.until(T0 + 10 * DAY_MS), TYPE_CART_ABANDONED) == []
    add(u, T0 + 11 * DAY_MS, cart="c2")
    u.on(
        "product_removed",
        T0 + 11 * DAY_MS + 1,
        product_id="p1",
        quantity=1,
        price=10.0,
        cart_id="c2",
    )
    assert of_type(u.until(T0 + 20 * DAY_MS), TYPE_CART_ABANDONED) == []
    add(u, T0 + 21 * DAY_MS, cart="c3")
    u.until(T0 + 21 * DAY_MS + H)  # reminder 1 of c3
    add(u, T0 + 21 * DAY_MS + 2 * H, cart="c3", product="p2")  # a change restarts the sequence
    [again] = of_type(u.until(T0 + 21 * DAY_MS + 3 * H), TYPE_CART_ABANDONED)
    assert again.payload["step"] == 1 and again.payload["value"] == 20.0


def test_a_reminder_due_before_the_order_fires_before_it_even_when_decided_late() -> None:
    """Stream time: the order arrives after the deadline; the reminder due
    before it still fires (at its deadline), then the order closes the cart."""
    u = User()
    add(u, T0)
    fired = u.on(
        "order_completed", T0 + 2 * H, order_id="o", revenue=10.0, currency="EUR", products=[]
    )
    [reminder] = of_type(fired, TYPE_CART_ABANDONED)
    assert reminder.occurred_at_ms == T0 + H
    assert of_type(u.until(T0 + 5 * DAY_MS), TYPE_CART_ABANDONED) == []


def test_quiet_hours_defer_a_trigger_to_their_end_in_the_users_zone() -> None:
    policy = replace(POLICY, delivery=DeliveryPolicy(quiet_hours=(22, 8), daily_cap=0))
    u = User(policy, timezone="Europe/Paris")  # UTC+1 in November
    u.consent(T0, email=True)
    add(u, T0 + 21 * H + 30 * 60_000)  # 22:30 Paris → reminder due 23:30 Paris
    assert u.state is not None
    due = T0 + 22 * H + 30 * 60_000
    assert quiet_until(due, u.state, policy.delivery) == T0 + DAY_MS + 7 * H  # 08:00 Paris
    assert next_deadline(u.state, policy) == T0 + DAY_MS + 7 * H
    assert of_type(u.until(T0 + DAY_MS + 7 * H - 1), TYPE_CART_ABANDONED) == []
    [deferred] = of_type(u.until(T0 + DAY_MS + 7 * H), TYPE_CART_ABANDONED)
    assert deferred.occurred_at_ms == due
    assert deferred.payload["delivery"]["deferred_ms"] == T0 + DAY_MS + 7 * H - due


def test_the_daily_cap_defers_further_triggers_to_the_next_day() -> None:
    policy = replace(
        POLICY,
        stages=StagePolicy(activation_events=("order_completed",)),
        cart=CartPolicy(reminder_delays_s=(3600,)),
        activation=ActivationPolicy(stalled_after_s=(3 * 3600,)),
        delivery=DeliveryPolicy(quiet_hours=(), daily_cap=1),
    )
    u = User(policy)
    u.on("signed_up", T0 + H)  # stalled nudge due T0 + 4h
    add(u, T0 + 2 * H)  # cart reminder due T0 + 3h: the day's one trigger
    fired = u.until(T0 + DAY_MS - 1)
    assert [t.type for t in fired if t.type in (TYPE_CART_ABANDONED, TYPE_ACTIVATION_STALLED)] == [
        TYPE_CART_ABANDONED
    ]
    [stalled] = of_type(u.until(T0 + DAY_MS), TYPE_ACTIVATION_STALLED)  # the next UTC day
    assert stalled.occurred_at_ms == T0 + 4 * H
    assert stalled.payload["delivery"]["deferred_ms"] == DAY_MS - 4 * H


def test_without_consent_a_trigger_is_flagged_or_suppressed() -> None:
    flagged = User()
    add(flagged, T0)
    [t] = of_type(flagged.until(T0 + H), TYPE_CART_ABANDONED)
    assert (
        t.payload["delivery"]["deliverable"] is False and t.payload["delivery"]["consent"] is None
    )
    policy = replace(POLICY, delivery=replace(NO_QUIET, consent="suppress"))
    suppressed = User(policy)
    suppressed.consent(T0, email=False)
    add(suppressed, T0)
    assert of_type(suppressed.until(T0 + 3 * DAY_MS), TYPE_CART_ABANDONED) == []
    assert suppressed.state is not None and suppressed.state.cart is not None
    assert suppressed.state.cart.reminders_sent == 2  # handled, not retried forever


def test_activation_stalled_fires_unless_activated_in_time() -> None:
    u = User()
    u.on("signed_up", T0)
    [t] = of_type(u.until(T0 + DAY_MS), TYPE_ACTIVATION_STALLED)
    assert t.occurred_at_ms == T0 + DAY_MS and t.payload["step"] == 1
    v = User()
    v.on("signed_up", T0)
    add(v, T0 + DAY_MS - 1)  # activated just in time
    assert of_type(v.until(T0 + 5 * DAY_MS), TYPE_ACTIVATION_STALLED) == []


def test_churn_warning_once_per_episode_then_win_back_and_re_arm() -> None:
    policy = replace(POLICY, churn=ChurnPolicy(inactivity_s=10 * 86400))
    u = User(policy)
    u.on("page_viewed", T0)
    assert of_type(u.until(T0 + 10 * DAY_MS - 1), TYPE_CHURN_WARNING) == []
    [warning] = of_type(u.until(T0 + 10 * DAY_MS), TYPE_CHURN_WARNING)
    assert warning.reason["rule"] == "fixed_inactivity" and warning.payload["priority"] == 3
    assert of_type(u.until(T0 + 40 * DAY_MS), TYPE_CHURN_WARNING) == []  # once per episode
    [back] = of_type(u.on("page_viewed", T0 + 45 * DAY_MS), TYPE_WIN_BACK)
    assert back.payload["gone_days"] == 45.0 and back.reason["warned_at"] == T0 + 10 * DAY_MS
    [again] = of_type(u.until(T0 + 55 * DAY_MS), TYPE_CHURN_WARNING)  # a new episode
    assert again.trigger_id != warning.trigger_id


def test_health_changes_on_time_alone() -> None:
    u = User()
    u.on("page_viewed", T0)
    u.on("page_viewed", T0 + 8 * DAY_MS)  # no longer new
    fired = u.until(T0 + 8 * DAY_MS + 14 * DAY_MS)
    changes = [(t.reason["from"], t.reason["to"]) for t in fired if t.type == "health_changed"]
    assert changes == [("active", "at_risk")]
    fired = u.until(T0 + 8 * DAY_MS + 30 * DAY_MS)
    assert [(t.reason["from"], t.reason["to"]) for t in fired if t.type == "health_changed"] == [
        ("at_risk", "dormant")
    ]


def test_deciding_late_gives_the_same_triggers_as_deciding_on_time() -> None:
    """Wall clock (ticks every hour) and stream time (one late catch-up) agree."""

    def history(u: User) -> None:
        u.on("signed_up", T0)
        add(u, T0 + H)

    ticking, late = User(), User()
    history(ticking)
    history(late)
    by_tick: list[Trigger] = []
    for hour in range(1, 24 * 40):
        by_tick += ticking.until(T0 + hour * H)
    at_once = late.until(T0 + (24 * 40 - 1) * H)
    assert [(t.type, t.trigger_id, t.occurred_at_ms) for t in by_tick] == [
        (t.type, t.trigger_id, t.occurred_at_ms) for t in at_once
    ]
    assert ticking.state == late.state


def test_decide_on_time_before_any_deadline_changes_nothing() -> None:
    u = User()
    add(u, T0)
    assert u.state is not None
    state, fired = decide_on_time(u.state, T0 + 1, POLICY)
    assert fired == [] and state.cart == u.state.cart


def test_timer_index_orders_replaces_and_clears_deadlines() -> None:
    index = TimerIndex()
    index.set(b"a", 30)
    index.set(b"b", 10)
    index.set(b"c", 20)
    index.set(b"a", 5)  # moved earlier
    index.set(b"c", None)  # cleared
    assert index.peek() == 5 and len(index) == 2
    assert list(index.pop_due(10)) == [(b"a", 5), (b"b", 10)]
    assert list(index.pop_due(100)) == [] and len(index) == 0
    for i in range(1000):  # stale heap entries are compacted away
        index.set(b"x", i)
    assert len(index._heap) < 200
    assert list(index.pop_due(10_000)) == [(b"x", 999)]


def test_win_back_carries_the_delivery_block_and_respects_consent_suppression() -> None:
    policy = replace(POLICY, churn=ChurnPolicy(inactivity_s=86400))
    flagged = User(policy)
    flagged.on("page_viewed", T0)
    flagged.until(T0 + 2 * DAY_MS)
    [back] = of_type(flagged.on("page_viewed", T0 + 3 * DAY_MS), TYPE_WIN_BACK)
    assert back.payload["delivery"]["deliverable"] is False  # no consent given: flagged
    suppressing = replace(policy, delivery=replace(NO_QUIET, consent="suppress"))
    quiet = User(suppressing)
    quiet.on("page_viewed", T0)
    quiet.until(T0 + 2 * DAY_MS)
    assert of_type(quiet.on("page_viewed", T0 + 3 * DAY_MS), TYPE_WIN_BACK) == []
