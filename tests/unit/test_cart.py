"""The cart rules as a shopper lives them: which events change the open cart
(and so restart its reminder sequence), which leave it alone, and which
orders close it — on the contract's own events and on REES46 rows mapped by
streams.datasets. docs/state.md ("The cart") states the rules."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.cart import TYPE_CART_ABANDONED
from streams.datasets import REES46, map_rows
from streams.errors import EventError
from streams.events import Event, parse_event
from streams.policy import (
    DAY_MS,
    ActivationPolicy,
    CartPolicy,
    ChurnPolicy,
    DeliveryPolicy,
    Policy,
)
from streams.state import apply
from streams.timed import next_deadline, run_until
from streams.triggers import Trigger
from streams.userstate import UserState
from tests.unit.test_datasets import SESSION_A, SESSION_B, rees

T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z
MIN = 60_000
H = 3_600_000
#: reminders an hour and a day after the last change; nothing else on time
POLICY = Policy(
    cart=CartPolicy(reminder_delays_s=(3600, 86400)),
    activation=ActivationPolicy(stalled_after_s=()),
    churn=ChurnPolicy(inactivity_s=0),
    delivery=DeliveryPolicy(quiet_hours=(), daily_cap=0),
)
#: a clock far after the datasets' 2019 timestamps, for validation
NOW_MS = 2_000_000_000_000


class Shopper:
    """One user's events through apply, with the timers caught up before each
    event — as the worker and the back-test run them on stream time."""

    def __init__(self) -> None:
        self.state: UserState | None = None
        self.reminders: list[Trigger] = []
        self.n = 0

    def event(self, event: Event) -> None:
        self.until(event.timestamp_ms - 1)
        self.state = apply(self.state, event, POLICY)

    def on(self, etype: str, at_ms: int, **props: Any) -> None:
        self.n += 1
        self.event(Event(f"e{self.n}", etype, at_ms, user_id="u1", properties=props))

    def add(self, at_ms: int, product: str = "p1", cart: str = "c1", price: float = 10.0) -> None:
        self.on("product_added", at_ms, product_id=product, quantity=1, price=price, cart_id=cart)

    def remove(self, at_ms: int, product: str = "p1", cart: str = "c1", quantity: int = 1) -> None:
        props = {"product_id": product, "quantity": quantity, "price": 10.0, "cart_id": cart}
        self.on("product_removed", at_ms, **props)

    def order(self, at_ms: int, products: tuple[str, ...] = (), cart: str | None = None) -> None:
        props: dict[str, Any] = {
            "order_id": f"o{self.n}",
            "revenue": 10.0 * len(products),
            "currency": "EUR",
            "products": [{"product_id": p, "quantity": 1, "price": 10.0} for p in products],
        }
        if cart is not None:
            props["cart_id"] = cart
        self.on("order_completed", at_ms, **props)

    def until(self, at_ms: int) -> None:
        self.state, fired = run_until(self.state, at_ms, POLICY)
        self.reminders += [t for t in fired if t.type == TYPE_CART_ABANDONED]

    def deadline(self) -> int | None:
        return next_deadline(self.state, POLICY)

    def sent(self) -> list[tuple[int, int, str]]:
        """(when, step, trigger id) of every reminder so far."""
        return [(t.occurred_at_ms, t.payload["step"], t.trigger_id) for t in self.reminders]


def left_alone() -> Shopper:
    """The control: one product added at T0 and nothing else."""
    u = Shopper()
    u.add(T0)
    u.until(T0 + 30 * DAY_MS)
    return u


# ---- removes that find nothing to remove ------------------------------------------


def test_removing_a_product_not_in_the_cart_does_not_restart_the_reminders() -> None:
    u = Shopper()
    u.add(T0)
    cart = u.state.cart if u.state else None
    u.remove(T0 + 30 * MIN, product="p2")  # never added
    assert u.state is not None and u.state.cart == cart  # not rebuilt: same change time
    assert u.deadline() == T0 + H  # reminder 1 still at the original time
    u.until(T0 + H)
    assert [(at, step) for at, step, _ in u.sent()] == [(T0 + H, 1)]
    u.remove(T0 + 2 * H, product="p2")  # and after a reminder went out
    assert u.deadline() == T0 + DAY_MS  # reminder 2 still due a day after the add
    u.until(T0 + 30 * DAY_MS)
    assert u.sent() == left_alone().sent()  # the same reminders, ids and times, as untouched


def test_removing_from_another_cart_leaves_the_open_cart_and_its_reminders() -> None:
    u = Shopper()
    u.add(T0, cart="c1")
    u.remove(T0 + 30 * MIN, product="p1", cart="c-other")  # same product, another cart
    assert u.state is not None and u.state.cart is not None
    assert u.state.cart.cart_id == "c1" and u.state.cart.last_change_ms == T0
    u.until(T0 + 30 * DAY_MS)
    assert u.sent() == left_alone().sent()


def test_a_remove_without_an_open_cart_opens_nothing() -> None:
    u = Shopper()
    u.remove(T0, product="p1")
    assert u.state is not None and u.state.cart is None
    u.until(T0 + 30 * DAY_MS)
    assert u.sent() == []


@given(
    adds=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6),
    product=st.sampled_from(["a", "b", "c", "z"]),
    cart=st.sampled_from(["c1", "c2"]),
    quantity=st.integers(1, 3),
)
def test_a_remove_either_takes_units_out_or_changes_nothing_at_all(
    adds: list[str], product: str, cart: str, quantity: int
) -> None:
    u = Shopper()
    for k, p in enumerate(adds):
        u.add(T0 + k * MIN, product=p, cart="c1")
    assert u.state is not None and u.state.cart is not None
    before = u.state.cart
    u.remove(T0 + H // 2, product=product, cart=cart, quantity=quantity)
    after = u.state.cart
    held = {i.product_id: i.quantity for i in before.items}
    if cart != "c1" or product not in held:
        assert after == before  # the cart, its change time and reminder count untouched
    elif held[product] <= quantity and len(held) == 1:
        assert after is None  # emptied
    else:
        assert after is not None and after.last_change_ms == T0 + H // 2  # a real change
        left = {i.product_id: i.quantity for i in after.items}
        assert left.get(product, 0) == max(0, held[product] - quantity)


# ---- changes that do restart the sequence ------------------------------------------


def test_a_real_remove_or_another_add_is_a_change_and_restarts_the_sequence() -> None:
    u = Shopper()
    u.add(T0, product="p1")
    u.add(T0 + 10 * MIN, product="p2")
    u.remove(T0 + 20 * MIN, product="p1")  # in the cart: a change
    assert u.deadline() == T0 + 20 * MIN + H
    u.add(T0 + 40 * MIN, product="p2")  # a second unit: a change too
    u.until(T0 + 30 * DAY_MS)
    assert [(at, step) for at, step, _ in u.sent()] == [
        (T0 + 40 * MIN + H, 1),
        (T0 + 40 * MIN + DAY_MS, 2),
    ]
    assert u.reminders[0].payload["items"] == [{"product_id": "p2", "quantity": 2, "price": 10.0}]


# ---- orders ----------------------------------------------------------------------------


def test_an_order_of_the_cart_or_of_no_named_cart_closes_it_as_before() -> None:
    for cart in ("c1", None):
        u = Shopper()
        u.add(T0, product="p1")
        u.order(T0 + 30 * MIN, products=("p-else",), cart=cart)  # whatever it bought
        assert u.state is not None and u.state.cart is None
        u.until(T0 + 30 * DAY_MS)
        assert u.sent() == []


def test_an_order_of_another_cart_that_bought_from_the_open_cart_closes_it() -> None:
    u = Shopper()
    u.add(T0, product="p1")
    u.add(T0 + MIN, product="p2")
    u.order(T0 + 30 * MIN, products=("p9", "p2"), cart="c-elsewhere")  # one of its products
    assert u.state is not None and u.state.cart is None
    u.until(T0 + 30 * DAY_MS)
    assert u.sent() == []


def test_an_order_of_another_cart_that_bought_none_of_its_products_leaves_it_alone() -> None:
    u = Shopper()
    u.add(T0, product="p1")
    u.order(T0 + 30 * MIN, products=("p9",), cart="c-elsewhere")
    assert u.state is not None and u.state.cart is not None
    assert u.state.order_count == 1
    u.until(T0 + 30 * DAY_MS)
    assert u.sent() == left_alone().sent()  # not closed, and not restarted either


def test_an_order_older_than_the_carts_last_change_does_not_close_it() -> None:
    u = Shopper()
    u.add(T0, product="p1")
    u.add(T0 + 20 * MIN, product="p2")
    u.order(T0 + 10 * MIN, products=("p1",), cart="c1")  # arrives late: the cart moved on
    assert u.state is not None and u.state.cart is not None
    assert u.state.cart.last_change_ms == T0 + 20 * MIN


# ---- REES46 rows, cart id = session -------------------------------------------------------


def rees46_shopper(rows: list[dict[str, str]], until_ms: int) -> Shopper:
    """REES46 rows mapped, validated as the pipeline does, applied in order."""
    u = Shopper()
    for line, result in map_rows(REES46, rows):
        assert not isinstance(result, EventError), f"line {line}: {result}"
        for m in result:
            u.event(parse_event(orjson.dumps(m.doc), now_ms=NOW_MS))
    u.until(until_ms)
    return u


DAY1 = "2019-10-01"
DAY2 = "2019-10-02"
DAY1_10H = 1_569_924_000_000  # 2019-10-01T10:00:00Z
X, Y, Z = "1004856", "1005115", "3601530"


def test_a_rees46_purchase_in_a_new_session_closes_the_cart_it_bought_from() -> None:
    rows = [
        rees("view", time=f"{DAY1} 10:00:00 UTC", session=SESSION_A, product=X),
        rees("cart", time=f"{DAY1} 10:00:30 UTC", session=SESSION_A, product=X),
        rees("cart", time=f"{DAY1} 10:01:00 UTC", session=SESSION_A, product=Y),
        # the next morning, a new session: buys X (one row per product)
        rees("view", time=f"{DAY2} 09:00:00 UTC", session=SESSION_B, product=X),
        rees("purchase", time=f"{DAY2} 09:05:00 UTC", session=SESSION_B, product=X),
    ]
    u = rees46_shopper(rows, DAY1_10H + 30 * DAY_MS)
    assert u.state is not None and u.state.cart is None and u.state.order_count == 1
    # the hour reminder went out the day before; none after the purchase
    assert [(at, step) for at, step, _ in u.sent()] == [(DAY1_10H + MIN + H, 1)]


def test_a_rees46_purchase_in_a_new_session_of_something_else_leaves_the_cart() -> None:
    rows = [
        rees("cart", time=f"{DAY1} 10:01:00 UTC", session=SESSION_A, product=X),
        rees("purchase", time=f"{DAY1} 18:00:00 UTC", session=SESSION_B, product=Z),
    ]
    u = rees46_shopper(rows, DAY1_10H + 30 * DAY_MS)
    assert u.state is not None and u.state.cart is not None and u.state.order_count == 1
    assert [(at, step) for at, step, _ in u.sent()] == [
        (DAY1_10H + MIN + H, 1),
        (DAY1_10H + MIN + DAY_MS, 2),  # the cart was not bought from: the sequence goes on
    ]


def test_a_rees46_purchase_in_the_carts_session_closes_it_as_before() -> None:
    rows = [
        rees("cart", time=f"{DAY1} 10:01:00 UTC", session=SESSION_A, product=X),
        rees("purchase", time=f"{DAY1} 10:20:00 UTC", session=SESSION_A, product=Z),
    ]
    u = rees46_shopper(rows, DAY1_10H + 30 * DAY_MS)
    assert u.state is not None and u.state.cart is None and u.sent() == []


def test_a_rees46_remove_in_a_later_session_takes_the_product_out_of_the_open_cart() -> None:
    rows = [
        rees("cart", time=f"{DAY1} 10:01:00 UTC", session=SESSION_A, product=X),
        rees("remove_from_cart", time=f"{DAY1} 10:30:00 UTC", session=SESSION_B, product=X),
    ]
    u = rees46_shopper(rows, DAY1_10H + 30 * DAY_MS)
    assert u.state is not None and u.state.cart is None  # emptied: no reminder about it
    assert u.sent() == []
