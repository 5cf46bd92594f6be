"""The cart rules: how adds, removes, checkouts and orders change the user's
open cart (docs/state.md, "The cart"), and the abandonment reminders it gets
while it stays open (``triggers.cart-abandonment``, docs/triggers.md).

A reminder *n* is due at ``last cart change + cart.reminder_delays_s[n]``;
the sequence stops when the cart is ordered or emptied (no open cart) and
starts again on the next change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streams import topics
from streams.delivery import Pending
from streams.events import Event
from streams.policy import Policy
from streams.userstate import Cart, CartItem, UserState

TYPE_CART_ABANDONED = "cart_abandoned"

#: the event types :func:`cart_change` folds into the cart
CART_EVENTS = frozenset(("product_added", "product_removed", "checkout_started"))


def cart_change(cart: Cart | None, event: Event) -> Cart | None:
    """The cart after an add, a remove or a checkout (one of :data:`CART_EVENTS`).

    An event older than the cart's last change is superseded and ignored. A
    checkout records its time on the open cart; it is no change. An add is
    always a change: to the open cart, or to a new cart when it names
    another cart id. A remove changes the cart only when it takes units of
    one of its products out of it; a remove of a product that is not in the
    open cart, or from another cart than the open one, returns the cart
    untouched — its ``last_change_ms`` and ``reminders_sent`` too, so the
    reminder sequence goes on as it was."""
    props = event.properties
    ts = event.timestamp_ms
    if cart is not None and ts < cart.last_change_ms:
        return cart
    if event.type == "checkout_started":
        if cart is None:
            return None
        return Cart(cart.cart_id, cart.items, cart.last_change_ms, ts, cart.reminders_sent)
    cart_id = str(props.get("cart_id", ""))
    open_items = cart.items if cart is not None and cart.cart_id == cart_id else ()
    items = {i.product_id: i for i in open_items}
    product = str(props.get("product_id", ""))
    quantity = int(props.get("quantity", 1))
    current = items.get(product)
    if event.type == "product_added":
        have = current.quantity if current else 0
        items[product] = CartItem(product, have + quantity, float(props.get("price", 0.0)))
    elif current is None:
        return cart  # nothing of it is in the open cart: nothing changes
    elif current.quantity > quantity:
        items[product] = replace(current, quantity=current.quantity - quantity)
    else:
        del items[product]
    if not items:
        return None  # an emptied cart is no open cart
    return Cart(cart_id, tuple(sorted(items.values(), key=lambda i: i.product_id)), ts)


def bought_from(cart: Cart, order: Event) -> bool:
    """Whether an ``order_completed`` bought from the open cart (and so closes
    it): it names that cart, or names no cart, or names another cart but
    bought one of the open cart's products (a REES46 purchase in a later
    session than the one the product was added in; a cart finished on
    another device)."""
    order_cart = order.properties.get("cart_id")
    if order_cart is None or order_cart == cart.cart_id:
        return True
    in_cart = {i.product_id for i in cart.items}
    lines = order.properties.get("products")
    return isinstance(lines, list) and any(
        isinstance(line, dict) and str(line.get("product_id")) in in_cart for line in lines
    )


def reminder(state: UserState, policy: Policy) -> Pending | None:
    """The next abandonment reminder of the open cart (None: no open cart,
    one worth less than ``cart.min_value``, or every reminder sent)."""
    cart = state.cart
    delays = policy.cart.reminder_delays_s
    if cart is None or cart.reminders_sent >= len(delays) or cart.value < policy.cart.min_value:
        return None
    step = cart.reminders_sent + 1
    return Pending(
        cart.last_change_ms + delays[step - 1] * 1000,
        TYPE_CART_ABANDONED,
        topics.TRIGGERS_CART_ABANDONMENT,
        (cart.cart_id, cart.last_change_ms, step),
        {
            "rule": "cart_reminder_sequence",
            "step": step,
            "of_steps": len(delays),
            "delay_s": delays[step - 1],
            "cart_last_change": cart.last_change_ms,
        },
        {
            "cart_id": cart.cart_id,
            "items": [
                {"product_id": i.product_id, "quantity": i.quantity, "price": i.price}
                for i in cart.items
            ],
            "value": cart.value,
            "step": step,
            "since_last_change_s": delays[step - 1],
            "checkout_started": cart.checkout_ms is not None,
        },
        _record_reminder,
    )


def _record_reminder(state: UserState, at: int) -> dict[str, Any]:
    cart = state.cart
    assert cart is not None
    sent = Cart(
        cart.cart_id, cart.items, cart.last_change_ms, cart.checkout_ms, cart.reminders_sent + 1
    )
    return {"cart": sent}
