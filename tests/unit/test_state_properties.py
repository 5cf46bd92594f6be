"""Property-based: apply is deterministic, redelivery changes nothing, and the
state survives serialisation — whatever the history."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codec import decode_state, encode_state
from streams.events import Event
from streams.policy import DAY_MS
from streams.state import apply
from streams.userstate import DEDUP_WINDOW, UserState

T0 = 1_700_000_000_000
PRODUCTS = st.sampled_from(["a", "b", "c"])
CARTS = st.sampled_from(["c1", "c2"])
MONEY = st.floats(min_value=0, max_value=2_000, allow_nan=False).map(lambda x: round(x, 2))

PAYLOADS: dict[str, Any] = {
    "signed_up": st.fixed_dictionaries({}, optional={"referrer_id": st.sampled_from(["r1", "r2"])}),
    "session_started": st.just({}),
    "page_viewed": st.just({}),
    "product_added": st.fixed_dictionaries(
        {"product_id": PRODUCTS, "quantity": st.integers(1, 3), "price": MONEY, "cart_id": CARTS}
    ),
    "product_removed": st.fixed_dictionaries(
        {"product_id": PRODUCTS, "quantity": st.integers(1, 3), "price": MONEY, "cart_id": CARTS}
    ),
    "checkout_started": st.fixed_dictionaries({"cart_id": CARTS}),
    "order_completed": st.fixed_dictionaries(
        {
            "order_id": st.text("abc", min_size=1, max_size=3),
            "revenue": MONEY,
            "currency": st.just("EUR"),
            "products": st.just([]),
        },
        optional={"cart_id": CARTS},
    ),
    "order_refunded": st.fixed_dictionaries(
        {"order_id": st.just("o"), "amount": MONEY, "currency": st.just("EUR")}
    ),
    "consent_updated": st.fixed_dictionaries(
        {
            "channels": st.dictionaries(
                st.sampled_from(["email", "sms", "push"]), st.booleans(), min_size=1
            )
        }
    ),
    "referral_converted": st.fixed_dictionaries(
        {"referrer_id": st.just("u"), "referred_user_id": st.sampled_from(["f1", "f2", "f3"])}
    ),
}


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 40))
    events = []
    for i in range(n):
        etype = draw(st.sampled_from(sorted(PAYLOADS)))
        props = draw(PAYLOADS[etype])
        ts = T0 + draw(st.integers(0, 120 * DAY_MS))
        events.append(Event(f"e{i}", etype, ts, user_id="u", properties=props))
    return events


def run(events: list[Event]) -> UserState | None:
    state: UserState | None = None
    for e in events:
        state = apply(state, e)
    return state


@settings(max_examples=200, deadline=None)
@given(histories())
def test_apply_is_deterministic(events: list[Event]) -> None:
    assert run(events) == run(list(events))


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_reapplying_a_recent_event_changes_nothing(
    events: list[Event], data: st.DataObject
) -> None:
    state = run(events)
    assert state is not None
    recent = events[-DEDUP_WINDOW:]
    again = data.draw(st.sampled_from(recent))
    assert apply(state, again) is state


@settings(max_examples=200, deadline=None)
@given(histories())
def test_redelivering_a_whole_suffix_changes_nothing(events: list[Event]) -> None:
    state = run(events)
    for e in events[-DEDUP_WINDOW:]:
        state = apply(state, e)
    assert state == run(events)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_state_round_trips_through_its_encoding(events: list[Event]) -> None:
    state = run(events)
    assert state is not None
    assert decode_state(encode_state(state)) == state


@settings(max_examples=100, deadline=None)
@given(histories())
def test_counts_and_money_are_consistent(events: list[Event]) -> None:
    state = run(events)
    assert state is not None
    orders = [e for e in events if e.type == "order_completed"]
    assert state.order_count == len(orders)
    assert abs(state.revenue - sum(float(e.properties["revenue"]) for e in orders)) < 0.05
    assert state.event_count == len(events)
    assert state.first_seen_ms == min(e.timestamp_ms for e in events)
    assert state.last_seen_ms == max(e.timestamp_ms for e in events)
    if state.cart is not None:
        assert state.cart.items and all(i.quantity > 0 for i in state.cart.items)
