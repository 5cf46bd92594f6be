"""Per-user state and the pure transition ``apply(state, event, policy)``.

The stored state is an immutable value (:class:`UserState`, in
:mod:`streams.userstate`). ``apply`` folds the event into the facts (counts,
times, cart, orders, consent …) and then re-derives what the growth team
reasons about — stage, health, RFM and tier — at the user's event time, so
the same history always gives the same state. Inside a batch the engine
folds events into a mutable :class:`WorkingState` with the same rules
(:func:`fold_into`; ``apply`` is that fold on a copy). docs/state.md
describes every field.

The table stores the state as a compact positional orjson array
(:func:`encode_state` / :func:`decode_state`, in :mod:`streams.codec`), led
by the schema version.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from streams import lifecycle
from streams.codec import decode_state as decode_state
from streams.codec import encode_state as encode_state
from streams.events import Event
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy, Precomputed, precomputed
from streams.userstate import ACTIVITY_DAYS as ACTIVITY_DAYS
from streams.userstate import DEDUP_WINDOW as DEDUP_WINDOW
from streams.userstate import ERASURE_EVENT as ERASURE_EVENT
from streams.userstate import REFERRAL_WINDOW as REFERRAL_WINDOW
from streams.userstate import SCHEMA_VERSION as SCHEMA_VERSION
from streams.userstate import STAGE_ACQUIRED as STAGE_ACQUIRED
from streams.userstate import STAGE_ERASED as STAGE_ERASED
from streams.userstate import STAGE_MERGED as STAGE_MERGED
from streams.userstate import AnyState as AnyState
from streams.userstate import Cart as Cart
from streams.userstate import CartItem as CartItem
from streams.userstate import UserState as UserState
from streams.userstate import WorkingState as WorkingState
from streams.userstate import evolve as evolve
from streams.userstate import freeze as freeze
from streams.userstate import fresh as fresh
from streams.userstate import thaw as thaw


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id for the de-duplication window."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def seen(state: AnyState, event: Event) -> bool:
    """True when ``event`` is one of the user's last DEDUP_WINDOW events."""
    return event_digest(event.event_id) in state.recent_events


def new_state(user_id: str, at_ms: int) -> UserState:
    return UserState(user_id=user_id, first_seen_ms=at_ms, last_seen_ms=at_ms)


def erased_marker(user_id: str, at_ms: int) -> UserState:
    """The marker an erasure leaves: no personal facts besides the key."""
    return UserState(user_id=user_id, first_seen_ms=at_ms, last_seen_ms=at_ms, stage=STAGE_ERASED)


def apply(
    state: UserState | None, event: Event, policy: Policy = DEFAULT_POLICY
) -> UserState | None:
    """The state after ``event``: ``None`` for a user never seen; returns the
    very same object when the event changes nothing (a redelivery), and
    ``None`` after ``user_deleted`` (erasure)."""
    if event.type == ERASURE_EVENT:
        return None
    if state is not None and state.stage == STAGE_ERASED:
        if event.timestamp_ms < state.last_seen_ms:
            return state  # from before the erasure (a replay): stays erased
        state = None  # the user came back: a new, empty history
    digest = event_digest(event.event_id)
    if state is None:
        working = fresh(event.key, event.timestamp_ms)
    elif digest in state.recent_events:
        return state
    else:
        working = thaw(state)
    fold_into(working, event, digest, precomputed(policy))
    return freeze(working)


def derive(state: UserState, now_ms: int, policy: Policy) -> UserState:
    """Re-derive stage, health, RFM, segment and tier at ``now_ms``."""
    evaluated, stage, health, rfm, segment, tier = _derived(state, now_ms, precomputed(policy))
    return evolve(
        state,
        {
            "evaluated_ms": evaluated,
            "stage": stage,
            "health": health,
            "rfm": rfm,
            "segment": segment,
            "tier": tier,
        },
    )


def derive_into(state: WorkingState, now_ms: int, pre: Precomputed) -> None:
    """:func:`derive`, in place (with the policy's :class:`Precomputed` values)."""
    (
        state.evaluated_ms,
        state.stage,
        state.health,
        state.rfm,
        state.segment,
        state.tier,
    ) = _derived(state, now_ms, pre)


def _derived(
    state: AnyState, now_ms: int, pre: Precomputed
) -> tuple[int, str, str, tuple[int, int, int] | None, str | None, str]:
    """(evaluated_ms, stage, health, rfm, segment, tier) of ``state`` at ``now_ms``."""
    policy = pre.policy
    rfm = lifecycle.rfm_at(state, now_ms, policy.rfm) if state.order_count else None
    evaluated = state.evaluated_ms
    return (
        evaluated if evaluated >= now_ms else now_ms,
        lifecycle.stage_of(state, policy),
        lifecycle.health_in_ms(
            state, now_ms, pre.resurrected_ms, pre.new_ms, pre.active_ms, pre.dormant_ms
        ),
        rfm,
        lifecycle.segment_of(rfm, policy.rfm) if rfm is not None else None,
        lifecycle.tier_of(state.ltv, policy.tiers),
    )


# ---- folding an event into the facts ---------------------------------------
def fold_into(state: WorkingState, event: Event, digest: str, pre: Precomputed) -> None:
    """Fold ``event`` (whose :func:`event_digest` is ``digest``, not seen yet)
    into the facts of ``state``, then derive again — what :func:`apply` does
    to a stored state, in place: every fact is computed from the values
    before the event, as one change. ``pre``: the policy's precomputed values."""
    ts = event.timestamp_ms
    props = event.properties
    context = event.context
    last_seen = state.last_seen_ms
    count = state.event_count
    if ts < state.first_seen_ms:
        state.first_seen_ms = ts
    if ts > last_seen:
        state.last_seen_ms = ts
    state.event_count = count + 1
    state.recent_events = (*state.recent_events[_KEEP_EVENTS:], digest)  # _remember, inline
    # the bit of ts's UTC day in the rolling activity bitmap
    day = ts // DAY_MS
    bits = state.activity_bits
    if bits == 0:
        state.activity_day = day
        state.activity_bits = 1
    elif day > state.activity_day:
        state.activity_bits = ((bits << (day - state.activity_day)) & _ACTIVITY_MASK) | 1
        state.activity_day = day
    elif state.activity_day - day < ACTIVITY_DAYS:
        state.activity_bits = bits | (1 << (state.activity_day - day))
    warned = state.churn_warned_ms
    if warned is not None and ts >= warned:
        state.churn_warned_ms = None  # the user is back: the episode ends
    if count > 0 and ts - last_seen >= pre.dormant_ms:
        state.resurrected_ms = ts
    if context:
        zone = context.get("timezone")
        if isinstance(zone, str) and zone != state.timezone:
            state.timezone = zone
        if state.channel is None:
            channel = context.get("channel")
            if isinstance(channel, str):
                state.channel = channel
            campaign = context.get("campaign")
            if isinstance(campaign, dict) and campaign:
                state.campaign = "/".join(
                    str(campaign.get(k) or "") for k in ("source", "medium", "name")
                )
    etype = event.type
    if etype in _CART_EVENTS:
        state.cart = _cart_change(state.cart, event)
    elif etype == "session_started":
        state.sessions += 1
    elif etype == "signed_up":
        signup = state.signup_ms
        state.signup_ms = ts if signup is None or ts < signup else signup
        referrer = props.get("referrer_id")
        if isinstance(referrer, str) and referrer != event.key and state.referrer_id is None:
            state.referrer_id = referrer
    elif etype == "checkout_started":
        cart = state.cart
        if cart is not None and ts >= cart.last_change_ms:
            state.cart = Cart(
                cart.cart_id, cart.items, cart.last_change_ms, ts, cart.reminders_sent
            )
    elif etype == "order_completed":
        _order(state, event)
    elif etype == "order_refunded":
        state.refunds = round(state.refunds + float(props.get("amount", 0.0)), 2)
    elif etype == "consent_updated":
        channels = props.get("channels", {})
        merged = dict(state.consent)
        merged.update({k: bool(v) for k, v in channels.items()})
        state.consent = tuple(sorted(merged.items()))
    elif etype == "referral_converted":
        credit = credit_referral(state, str(props.get("referred_user_id", "")))
        if credit:
            state.referral_count = credit["referral_count"]
            state.recent_referrals = credit["recent_referrals"]
    _activation_and_retention(state, etype, ts, pre)
    # derived as of the newest time the user was looked at: an event older than
    # a decision already taken on time (a late event) must not turn the clock back
    last_seen = state.last_seen_ms
    evaluated = state.evaluated_ms
    (
        state.evaluated_ms,
        state.stage,
        state.health,
        state.rfm,
        state.segment,
        state.tier,
    ) = _derived(state, last_seen if last_seen >= evaluated else evaluated, pre)


_CART_EVENTS = frozenset(("product_added", "product_removed"))
#: the slice of the de-duplication window that stays when one more is remembered
_KEEP_EVENTS = -(DEDUP_WINDOW - 1)


_ACTIVITY_MASK = (1 << ACTIVITY_DAYS) - 1


def _cart_change(cart: Cart | None, event: Event) -> Cart | None:
    """The cart after an add or remove (docs/state.md, "The cart").

    An event older than the cart's last change is superseded and ignored. An
    add is always a change: to the open cart, or to a new cart when it names
    another cart id. A remove changes the cart only when it takes units of one
    of its products out of it; a remove of a product that is not in the open
    cart, or from another cart than the open one, returns the cart untouched —
    its ``last_change_ms`` and ``reminders_sent`` too, so the reminder
    sequence goes on as it was."""
    props = event.properties
    ts = event.timestamp_ms
    cart_id = str(props.get("cart_id", ""))
    if cart is not None and ts < cart.last_change_ms:
        return cart
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


def _order(state: WorkingState, event: Event) -> None:
    ts = event.timestamp_ms
    revenue = float(event.properties.get("revenue", 0.0))
    state.order_count += 1
    state.revenue = round(state.revenue + revenue, 2)
    first, last = state.first_order_ms, state.last_order_ms
    state.first_order_ms = ts if first is None or ts < first else first
    state.last_order_ms = ts if last is None or ts > last else last
    cart = state.cart
    if cart is not None and ts >= cart.last_change_ms and _bought_from(cart, event):
        state.cart = None  # the order closes the open cart


def _bought_from(cart: Cart, order: Event) -> bool:
    """Whether an ``order_completed`` bought from the open cart: it names that
    cart, or names no cart, or names another cart but bought one of the open
    cart's products (a REES46 purchase in a later session than the one the
    product was added in; a cart finished on another device)."""
    order_cart = order.properties.get("cart_id")
    if order_cart is None or order_cart == cart.cart_id:
        return True
    in_cart = {i.product_id for i in cart.items}
    lines = order.properties.get("products")
    return isinstance(lines, list) and any(
        isinstance(line, dict) and str(line.get("product_id")) in in_cart for line in lines
    )


def credit_referral(state: AnyState, referred_user_id: str) -> dict[str, Any]:
    """Count a converted referral once per referred user (within the window)."""
    if not referred_user_id or referred_user_id in state.recent_referrals:
        return {}
    return {
        "referral_count": state.referral_count + 1,
        "recent_referrals": _remember(state.recent_referrals, referred_user_id, REFERRAL_WINDOW),
    }


def _remember(window: tuple[str, ...], item: str, size: int) -> tuple[str, ...]:
    """``window`` with ``item`` appended, keeping the last ``size``."""
    return (*window[-(size - 1) :], item)


def _activation_and_retention(state: WorkingState, etype: str, ts: int, pre: Precomputed) -> None:
    if state.activation_ms is None and etype in pre.activation_events:
        start = state.signup_ms if state.signup_ms is not None else state.first_seen_ms
        if 0 <= ts - start <= pre.activation_window_ms:
            state.activation_ms = ts
            return
    activated = state.activation_ms
    if activated is not None and state.retained_ms is None and ts - activated >= pre.retention_ms:
        state.retained_ms = ts
