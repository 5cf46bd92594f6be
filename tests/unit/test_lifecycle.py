"""Stage, health, RFM, tier, cart and erasure rules on crafted histories."""

from __future__ import annotations

from typing import Any

import pytest

from streams import lifecycle
from streams.codec import decode_state, encode_state
from streams.derived import ReferralCredit
from streams.events import Event
from streams.lifecycle import SEGMENT_LABELS, health_at, rfm_at, segment_of, tier_of
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy, RfmPolicy, StagePolicy, TierPolicy
from streams.referral import credits_to_send, on_referral_credit
from streams.state import apply
from streams.triggers import (
    TYPE_ERASED,
    TYPE_HEALTH_CHANGED,
    TYPE_SEGMENT_CHANGED,
    TYPE_STAGE_CHANGED,
    TYPE_TIER_CHANGED,
    decide_on_event,
)
from streams.userstate import UserState

T0 = 1_700_000_000_000 - (1_700_000_000_000 % DAY_MS)  # a UTC midnight


class Journey:
    """Applies events to one user and records the triggers they cause."""

    def __init__(self, user: str = "u1", policy: Policy = DEFAULT_POLICY) -> None:
        self.user = user
        self.policy = policy
        self.state: UserState | None = None
        self.triggers: list[tuple[str, Any, Any]] = []
        self.n = 0

    def on(self, etype: str, day: float, **props: Any) -> UserState | None:
        self.n += 1
        event = Event(
            event_id=f"{self.user}-{self.n}",
            type=etype,
            timestamp_ms=T0 + int(day * DAY_MS),
            user_id=self.user,
            properties=props,
            context={"channel": "email", "campaign": {"source": "news", "medium": "email"}},
        )
        old = self.state
        self.state = apply(old, event, self.policy)
        for t in decide_on_event(old, self.state, event):
            self.triggers.append((t.type, t.reason.get("from"), t.reason.get("to")))
        return self.state

    @property
    def s(self) -> UserState:
        assert self.state is not None
        return self.state


def order(amount: float, cart_id: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "order_id": f"o-{amount}",
        "revenue": amount,
        "currency": "EUR",
        "products": [],
    }
    if cart_id:
        props["cart_id"] = cart_id
    return props


def test_the_aarrr_journey_in_order_with_one_trigger_per_stage() -> None:
    j = Journey()
    j.on("signed_up", 0)
    assert j.s.stage == lifecycle.ACQUIRED and j.s.signup_ms == T0
    j.on("product_added", 1, product_id="p", quantity=1, price=30.0, cart_id="c1")
    assert j.s.stage == lifecycle.ACTIVATED and j.s.activation_ms == T0 + DAY_MS
    j.on("page_viewed", 5)
    assert j.s.stage == lifecycle.ACTIVATED  # same period as the activation
    j.on("page_viewed", 8)
    assert j.s.stage == lifecycle.RETAINED  # active again ≥ 7 days after activation
    j.on("order_completed", 8.5, **order(30.0, "c1"))
    assert j.s.stage == lifecycle.MONETIZED and j.s.cart is None
    j.on("order_completed", 9, **order(20.0))
    assert j.s.stage == lifecycle.REPEAT_BUYER and j.s.order_count == 2 and j.s.ltv == 50.0
    j.on("referral_converted", 10, referrer_id="u1", referred_user_id="friend")
    assert j.s.stage == lifecycle.REFERRER
    stages = [(f, t) for kind, f, t in j.triggers if kind == TYPE_STAGE_CHANGED]
    assert stages == [
        (None, "acquired"),
        ("acquired", "activated"),
        ("activated", "retained"),
        ("retained", "monetized"),
        ("monetized", "repeat_buyer"),
        ("repeat_buyer", "referrer"),
    ]


def test_activation_needs_the_key_action_within_the_window() -> None:
    j = Journey(policy=Policy(stages=StagePolicy(activation_window_days=2)))
    j.on("signed_up", 0)
    j.on("product_added", 2.5, product_id="p", quantity=1, price=1.0, cart_id="c")
    assert j.s.activation_ms is None and j.s.stage == lifecycle.ACQUIRED
    j2 = Journey(policy=Policy(stages=StagePolicy(activation_window_days=2)))
    j2.on("signed_up", 0)
    j2.on("product_added", 2, product_id="p", quantity=1, price=1.0, cart_id="c")  # at the edge
    assert j2.s.stage == lifecycle.ACTIVATED


def test_a_stage_never_goes_back() -> None:
    j = Journey()
    j.on("order_completed", 0, **order(10.0))
    assert j.s.stage == lifecycle.MONETIZED
    j.on("order_refunded", 1, order_id="o-10.0", amount=10.0, currency="EUR")
    assert j.s.stage == lifecycle.MONETIZED and j.s.ltv == 0.0


@pytest.mark.parametrize(
    ("days_after_last_seen", "first_seen_days_ago", "expected"),
    [
        (0, 0, "new"),
        (0, 6.99, "new"),
        (0, 7, "active"),
        (13.99, 30, "active"),
        (14, 30, "at_risk"),
        (29.99, 60, "at_risk"),
        (30, 60, "dormant"),
    ],
)
def test_health_edges(
    days_after_last_seen: float, first_seen_days_ago: float, expected: str
) -> None:
    now = T0 + 100 * DAY_MS
    state = UserState(
        "u",
        first_seen_ms=now - int(first_seen_days_ago * DAY_MS),
        last_seen_ms=now - int(days_after_last_seen * DAY_MS),
    )
    assert health_at(state, now, DEFAULT_POLICY.health) == expected


def test_a_dormant_user_who_returns_is_resurrected_for_a_while_then_active() -> None:
    j = Journey()
    j.on("page_viewed", 0)
    j.on("page_viewed", 8)
    assert j.s.health == "active"
    j.on("page_viewed", 40)  # 32 days away ≥ dormant_days
    assert j.s.health == "resurrected" and j.s.resurrected_ms == T0 + 40 * DAY_MS
    assert (TYPE_HEALTH_CHANGED, "active", "resurrected") in j.triggers
    j.on("page_viewed", 53.9)
    assert j.s.health == "resurrected"
    j.on("page_viewed", 54)
    assert j.s.health == "active"
    assert health_at(j.s, T0 + 54 * DAY_MS + 14 * DAY_MS, DEFAULT_POLICY.health) == "at_risk"


def test_rfm_scores_at_their_edges() -> None:
    policy = DEFAULT_POLICY.rfm
    now = T0 + 365 * DAY_MS

    def score(days_since_order: float, orders: int, ltv: float) -> tuple[int, int, int] | None:
        s = UserState(
            "u", first_seen_ms=T0, last_seen_ms=now, order_count=orders, revenue=ltv,
            last_order_ms=now - int(days_since_order * DAY_MS) if orders else None,
        )  # fmt: skip
        return rfm_at(s, now, policy)

    assert score(0, 0, 0) is None
    assert score(7, 1, 49.99) == (5, 1, 1)
    assert score(7.01, 2, 50) == (4, 2, 2)
    assert score(30, 3, 200) == (4, 3, 3)
    assert score(90, 5, 500) == (3, 4, 4)
    assert score(180, 10, 1000) == (2, 5, 5)
    assert score(181, 100, 10**6) == (1, 5, 5)


@pytest.mark.parametrize(
    ("rfm", "segment"),
    [
        ((5, 5, 5), "important_value"),
        ((5, 1, 5), "important_development"),
        ((1, 5, 5), "important_retention"),
        ((1, 1, 5), "important_win_back"),
        ((5, 5, 1), "general_value"),
        ((3, 2, 2), "general_development"),
        ((2, 3, 2), "general_retention"),
        ((2, 2, 2), "general_win_back"),
    ],
)
def test_the_eight_rfm_segments(rfm: tuple[int, int, int], segment: str) -> None:
    assert segment_of(rfm, RfmPolicy()) == segment
    assert segment in SEGMENT_LABELS and SEGMENT_LABELS[segment].endswith("客户")


def test_value_tiers_at_their_thresholds() -> None:
    tiers = TierPolicy(high_ltv=1000, mid_ltv=200)
    assert [tier_of(x, tiers) for x in (0, 199.99, 200, 999.99, 1000)] == [
        "low", "low", "mid", "mid", "high",
    ]  # fmt: skip


def test_a_refund_that_drops_the_tier_emits_tier_and_segment_changes() -> None:
    j = Journey()
    j.on("order_completed", 0, **order(1200.0))
    assert (j.s.tier, j.s.segment) == ("high", "important_development")
    j.on("order_refunded", 1, order_id="o-1200.0", amount=1100.0, currency="EUR")
    assert j.s.tier == "low" and j.s.ltv == 100.0
    assert (TYPE_TIER_CHANGED, "high", "low") in j.triggers
    assert (TYPE_SEGMENT_CHANGED, "important_development", "general_development") in j.triggers


def test_cart_adds_removes_empties_and_ignores_superseded_events() -> None:
    j = Journey()
    j.on("product_added", 0, product_id="a", quantity=2, price=10.0, cart_id="c1")
    j.on("product_added", 0.1, product_id="b", quantity=1, price=5.5, cart_id="c1")
    cart = j.s.cart
    assert cart is not None and cart.value == 25.5 and cart.last_change_ms == T0 + DAY_MS // 10
    j.on("product_removed", 0.2, product_id="a", quantity=1, price=10.0, cart_id="c1")
    assert j.s.cart is not None and j.s.cart.value == 15.5
    j.on("product_added", 0.15, product_id="z", quantity=9, price=99.0, cart_id="c1")  # late
    assert j.s.cart is not None and j.s.cart.value == 15.5
    j.on("checkout_started", 0.3, cart_id="c1")
    assert j.s.cart is not None and j.s.cart.checkout_ms == T0 + int(0.3 * DAY_MS)
    j.on("product_removed", 0.4, product_id="a", quantity=1, price=10.0, cart_id="c1")
    j.on("product_removed", 0.5, product_id="b", quantity=1, price=5.5, cart_id="c1")
    assert j.s.cart is None  # emptied
    j.on("product_added", 1, product_id="a", quantity=1, price=10.0, cart_id="c1")
    j.on("product_added", 2, product_id="x", quantity=1, price=1.0, cart_id="c2")
    assert j.s.cart is not None and j.s.cart.cart_id == "c2" and j.s.cart.value == 1.0


def test_an_order_for_another_cart_leaves_the_open_cart() -> None:
    j = Journey()
    j.on("product_added", 0, product_id="a", quantity=1, price=10.0, cart_id="c1")
    j.on("order_completed", 1, **order(5.0, "other"))
    assert j.s.cart is not None
    j.on("order_completed", 2, **order(10.0))  # no cart id: closes the open cart
    assert j.s.cart is None


def test_consent_acquisition_sessions_and_activity_windows() -> None:
    j = Journey()
    j.on("consent_updated", 0, channels={"email": True, "sms": False})
    j.on("consent_updated", 1, channels={"sms": True})
    assert j.s.consent == (("email", True), ("sms", True))
    assert j.s.channel == "email" and j.s.campaign == "news/email/"
    j.on("session_started", 2)
    j.on("session_started", 20)
    assert j.s.sessions == 2
    now = T0 + 20 * DAY_MS
    assert j.s.active_days(7, now) == 1
    assert j.s.active_days(30, now) == 4
    assert j.s.active_days(7, now + 10 * DAY_MS) == 0


def test_erasure_removes_the_state_and_acknowledges_without_personal_data() -> None:
    j = Journey()
    j.on("signed_up", 0)
    old = j.s
    event = Event("del-1", "user_deleted", T0 + DAY_MS, user_id="u1")
    assert apply(old, event) is None
    [ack] = decide_on_event(old, None, event)
    assert ack.type == TYPE_ERASED and ack.profile == {} and ack.user_id == "u1"
    assert decide_on_event(None, None, event) == []


def test_referral_credit_goes_to_the_referrer_once_per_referred_user() -> None:
    j = Journey(user="new-user")
    j.on("signed_up", 0, referrer_id="ref-1")
    old, new = None, j.s
    event = Event("x", "signed_up", T0, user_id="new-user", properties={"referrer_id": "ref-1"})
    [credit] = credits_to_send(old, new, event)
    assert credit == ReferralCredit("ref-1", "new-user", T0, "x")
    assert credits_to_send(new, new, event) == []

    referrer = Journey(user="ref-1")
    referrer.on("order_completed", 0, **order(10.0))
    credited = on_referral_credit(referrer.s, credit, DEFAULT_POLICY)
    assert credited.referral_count == 1 and credited.stage == lifecycle.REFERRER
    assert on_referral_credit(credited, credit, DEFAULT_POLICY) is credited


def test_a_rich_state_round_trips_and_stays_under_a_kilobyte() -> None:
    j = Journey(user="user-0123456789")
    j.on("signed_up", 0, referrer_id="someone")
    j.on("consent_updated", 0, channels={"email": True, "sms": False, "push": True})
    for d in range(1, 20):
        j.on("product_viewed", d, product_id=f"p{d}")
    j.on("product_added", 20, product_id="sku-000123", quantity=2, price=19.99, cart_id="cart-42")
    j.on("product_added", 20, product_id="sku-000456", quantity=1, price=5.0, cart_id="cart-42")
    j.on("order_completed", 21, **order(44.98))
    j.on("product_added", 22, product_id="sku-000789", quantity=1, price=9.5, cart_id="cart-43")
    raw = encode_state(j.s)
    assert decode_state(raw) == j.s
    assert len(raw) < 1024, f"{len(raw)} bytes"


@pytest.mark.parametrize(("away_days", "resurrected"), [(29.99, False), (30, True)])
def test_resurrection_needs_at_least_the_dormant_interval_away(
    away_days: float, resurrected: bool
) -> None:
    j = Journey()
    j.on("page_viewed", 0)
    j.on("page_viewed", away_days)
    assert (j.s.health == "resurrected") is resurrected


def test_after_erasure_older_events_stay_erased_and_newer_ones_start_afresh() -> None:
    from streams.state import erased_marker
    from streams.userstate import STAGE_ERASED

    marker = erased_marker(T0 + 10 * DAY_MS, None)
    assert marker.stage == STAGE_ERASED and marker.event_count == 0
    replayed = Event(
        "old-1", "order_completed", T0 + 5 * DAY_MS, user_id="u1", properties=order(9.0)
    )
    assert apply(marker, replayed) is marker
    back = Event("new-1", "page_viewed", T0 + 11 * DAY_MS, user_id="u1")
    fresh = apply(marker, back)
    assert fresh is not None and fresh.event_count == 1 and fresh.order_count == 0
    [t] = decide_on_event(marker, fresh, back)
    assert (t.type, t.reason["from"], t.reason["to"], t.reason["rule"]) == (
        TYPE_STAGE_CHANGED, None, "acquired", "first_seen",
    )  # fmt: skip
