"""Per-user state and the pure transition ``apply(state, event, policy)``.

The state is an immutable value. ``apply`` folds the event into the facts
(counts, times, cart, orders, consent …) and then re-derives what the growth
team reasons about — stage, health, RFM and tier — at the user's event time,
so the same history always gives the same state. docs/state.md describes
every field.

The table stores the state as a compact positional orjson array
(:func:`encode_state` / :func:`decode_state`), led by the schema version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import orjson

from streams import lifecycle
from streams.errors import StateError
from streams.events import Event
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy

SCHEMA_VERSION = 3

#: How many recent event ids per user are remembered to drop redeliveries.
#: Each costs 19 bytes of serialised state (a 64-bit digest in hex, quoted).
DEDUP_WINDOW = 16
#: Referred users remembered per referrer, so a credit delivered twice counts once.
REFERRAL_WINDOW = 16
#: Days of activity kept in the rolling activity bitmap.
ACTIVITY_DAYS = 60

STAGE_ACQUIRED = lifecycle.ACQUIRED
#: an anonymous id whose history now belongs to a known user (see streams.identity)
STAGE_MERGED = "merged"
#: what remains of an erased user: no facts, only the key, the erasure time
#: (older events are refused) and the revision (newer writes stay ordered)
STAGE_ERASED = "erased"
ERASURE_EVENT = "user_deleted"


@dataclass(frozen=True, slots=True)
class CartItem:
    product_id: str
    quantity: int
    price: float


@dataclass(frozen=True, slots=True)
class Cart:
    """The user's open cart; ``value`` is the sum of quantity × price."""

    cart_id: str
    items: tuple[CartItem, ...]
    last_change_ms: int
    checkout_ms: int | None = None
    #: abandonment reminders sent for this cart since its last change
    reminders_sent: int = 0

    @property
    def value(self) -> float:
        return round(sum(i.quantity * i.price for i in self.items), 2)


@dataclass(frozen=True, slots=True)
class UserState:
    """What userpulse knows about one user (keyed by user or anonymous id)."""

    user_id: str
    first_seen_ms: int
    last_seen_ms: int
    event_count: int = 0
    signup_ms: int | None = None
    activation_ms: int | None = None
    retained_ms: int | None = None
    first_order_ms: int | None = None
    last_order_ms: int | None = None
    order_count: int = 0
    revenue: float = 0.0
    refunds: float = 0.0
    sessions: int = 0
    #: UTC day number of bit 0 of ``activity_bits``; bit i = active on that day − i
    activity_day: int = 0
    activity_bits: int = 0
    cart: Cart | None = None
    channel: str | None = None
    campaign: str | None = None
    referrer_id: str | None = None
    referral_count: int = 0
    recent_referrals: tuple[str, ...] = ()
    #: (channel, granted) pairs, sorted by channel
    consent: tuple[tuple[str, bool], ...] = ()
    #: (trigger type, last time emitted) pairs, sorted by type
    last_triggers: tuple[tuple[str, int], ...] = ()
    #: the user's IANA time zone (context.timezone), for quiet hours
    timezone: str | None = None
    #: activation-stalled nudges sent since sign-up
    stalled_sent: int = 0
    #: when the current churn episode was warned about (cleared by any activity)
    churn_warned_ms: int | None = None
    #: UTC day number and count of marketing triggers sent that day (daily cap)
    sent_day: int = 0
    sent_count: int = 0
    #: the time stage, health, RFM and tier were last derived at
    evaluated_ms: int = 0
    stage: str = STAGE_ACQUIRED
    health: str = lifecycle.NEW
    resurrected_ms: int | None = None
    rfm: tuple[int, int, int] | None = None
    segment: str | None = None
    tier: str = lifecycle.LOW
    recent_events: tuple[str, ...] = ()
    #: anonymous ids whose history was merged into this user (identity)
    merged_from: tuple[str, ...] = ()
    #: set on an anonymous id's state once it was merged into that user;
    #: later events of the anonymous id are forwarded there
    merged_into: str | None = None
    #: bumped by every stored change; orders the Redis projection's writes
    revision: int = 0
    schema_version: int = SCHEMA_VERSION

    @property
    def ltv(self) -> float:
        """Lifetime value: revenue net of refunds."""
        return round(self.revenue - self.refunds, 2)

    def active_days(self, days: int, now_ms: int) -> int:
        """On how many of the ``days`` UTC days up to ``now_ms`` the user was active."""
        limit = days - max(0, now_ms // DAY_MS - self.activity_day)
        if limit <= 0:
            return 0
        return bin(self.activity_bits & ((1 << limit) - 1)).count("1")

    def consented(self, channel: str) -> bool | None:
        return dict(self.consent).get(channel)


def _compile_evolve() -> Any:
    """Build :func:`evolve`: ``dataclasses.replace`` for :class:`UserState`
    without its generic machinery (one call per field, no keyword packing);
    2–3× faster, and the fold calls it twice per event."""
    names = [f.name for f in fields(UserState)]
    lines = [
        "def evolve(state, changes):",
        "    if not _known.issuperset(changes):",
        "        raise TypeError(f'UserState has no field(s) {sorted(set(changes) - _known)}')",
        "    new = _new(UserState)",
        "    get = changes.get",
    ]
    lines += [f"    _set(new, {n!r}, get({n!r}, state.{n}))" for n in names]
    lines.append("    return new")
    scope = {"UserState": UserState, "_new": object.__new__, "_set": object.__setattr__}
    scope["_known"] = frozenset(names)
    exec("\n".join(lines), scope)
    return scope["evolve"]


#: ``evolve(state, {"field": value, ...})`` — ``replace(state, **changes)``, faster.
evolve: Callable[[UserState, dict[str, Any]], UserState] = _compile_evolve()


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id for the de-duplication window."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def seen(state: UserState, event: Event) -> bool:
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
    if state is None:
        state = new_state(event.key, event.timestamp_ms)
    elif seen(state, event):
        return state
    facts = _fold(state, event, policy)
    # derived as of the newest time the user was looked at: an event older than
    # a decision already taken on time (a late event) must not turn the clock back
    return derive(facts, max(facts.last_seen_ms, facts.evaluated_ms), policy)


def derive(state: UserState, now_ms: int, policy: Policy) -> UserState:
    """Re-derive stage, health, RFM, segment and tier at ``now_ms``."""
    rfm = lifecycle.rfm_at(state, now_ms, policy.rfm)
    return evolve(
        state,
        {
            "evaluated_ms": max(state.evaluated_ms, now_ms),
            "stage": lifecycle.stage_of(state, policy),
            "health": lifecycle.health_at(state, now_ms, policy.health),
            "rfm": rfm,
            "segment": lifecycle.segment_of(rfm, policy.rfm),
            "tier": lifecycle.tier_of(state.ltv, policy.tiers),
        },
    )


# ---- folding an event into the facts ---------------------------------------
def _fold(state: UserState, event: Event, policy: Policy) -> UserState:
    ts = event.timestamp_ms
    props = event.properties
    changes: dict[str, Any] = {
        "first_seen_ms": min(state.first_seen_ms, ts),
        "last_seen_ms": max(state.last_seen_ms, ts),
        "event_count": state.event_count + 1,
        "recent_events": _remember(state.recent_events, event_digest(event.event_id), DEDUP_WINDOW),
    }
    changes.update(_activity(state, ts))
    if state.churn_warned_ms is not None and ts >= state.churn_warned_ms:
        changes["churn_warned_ms"] = None  # the user is back: the episode ends
    zone = event.context.get("timezone")
    if isinstance(zone, str) and zone != state.timezone:
        changes["timezone"] = zone
    gap = ts - state.last_seen_ms
    if state.event_count > 0 and gap >= policy.health.dormant_days * DAY_MS:
        changes["resurrected_ms"] = ts
    if state.channel is None:
        channel = event.context.get("channel")
        if isinstance(channel, str):
            changes["channel"] = channel
        campaign = event.context.get("campaign")
        if isinstance(campaign, dict) and campaign:
            changes["campaign"] = "/".join(
                str(campaign.get(k) or "") for k in ("source", "medium", "name")
            )
    etype = event.type
    if etype == "signed_up":
        changes["signup_ms"] = ts if state.signup_ms is None else min(state.signup_ms, ts)
        referrer = props.get("referrer_id")
        if isinstance(referrer, str) and referrer != event.key and state.referrer_id is None:
            changes["referrer_id"] = referrer
    elif etype == "session_started":
        changes["sessions"] = state.sessions + 1
    elif etype in ("product_added", "product_removed"):
        changes["cart"] = _cart_change(state.cart, event)
    elif etype == "checkout_started":
        cart = state.cart
        if cart is not None and ts >= cart.last_change_ms:
            changes["cart"] = replace(cart, checkout_ms=ts)
    elif etype == "order_completed":
        changes.update(_order(state, event))
    elif etype == "order_refunded":
        changes["refunds"] = round(state.refunds + float(props.get("amount", 0.0)), 2)
    elif etype == "consent_updated":
        channels = props.get("channels", {})
        merged = dict(state.consent)
        merged.update({k: bool(v) for k, v in channels.items()})
        changes["consent"] = tuple(sorted(merged.items()))
    elif etype == "referral_converted":
        changes.update(credit_referral(state, str(props.get("referred_user_id", ""))))
    folded = evolve(state, changes)
    return _activation_and_retention(folded, event, policy)


def _activity(state: UserState, ts: int) -> dict[str, int]:
    """Set the bit of ``ts``'s UTC day in the rolling activity bitmap."""
    day = ts // DAY_MS
    mask = (1 << ACTIVITY_DAYS) - 1
    if state.activity_bits == 0:
        return {"activity_day": day, "activity_bits": 1}
    if day > state.activity_day:
        shifted = (state.activity_bits << (day - state.activity_day)) & mask
        return {"activity_day": day, "activity_bits": shifted | 1}
    offset = state.activity_day - day
    if offset >= ACTIVITY_DAYS:
        return {}
    return {"activity_bits": state.activity_bits | (1 << offset)}


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


def _order(state: UserState, event: Event) -> dict[str, Any]:
    ts = event.timestamp_ms
    revenue = float(event.properties.get("revenue", 0.0))
    changes: dict[str, Any] = {
        "order_count": state.order_count + 1,
        "revenue": round(state.revenue + revenue, 2),
        "first_order_ms": ts if state.first_order_ms is None else min(state.first_order_ms, ts),
        "last_order_ms": ts if state.last_order_ms is None else max(state.last_order_ms, ts),
    }
    cart = state.cart
    if cart is not None and ts >= cart.last_change_ms and _bought_from(cart, event):
        changes["cart"] = None  # the order closes the open cart
    return changes


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


def credit_referral(state: UserState, referred_user_id: str) -> dict[str, Any]:
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


def _activation_and_retention(state: UserState, event: Event, policy: Policy) -> UserState:
    stages = policy.stages
    ts = event.timestamp_ms
    if state.activation_ms is None and event.type in stages.activation_events:
        start = state.signup_ms if state.signup_ms is not None else state.first_seen_ms
        if 0 <= ts - start <= stages.activation_window_days * DAY_MS:
            return evolve(state, {"activation_ms": ts})
    if (
        state.activation_ms is not None
        and state.retained_ms is None
        and ts - state.activation_ms >= stages.retention_period_days * DAY_MS
    ):
        return evolve(state, {"retained_ms": ts})
    return state


# ---- compact serialisation --------------------------------------------------
_SCALARS = (
    "user_id", "first_seen_ms", "last_seen_ms", "event_count", "signup_ms", "activation_ms",
    "retained_ms", "first_order_ms", "last_order_ms", "order_count", "revenue", "refunds",
    "sessions", "activity_day", "activity_bits", "channel", "campaign", "referrer_id",
    "referral_count", "stage", "health", "resurrected_ms", "segment", "tier", "merged_into",
    "revision", "timezone", "stalled_sent", "churn_warned_ms", "sent_day", "sent_count",
    "evaluated_ms",
)  # fmt: skip
_TUPLES = ("recent_referrals", "recent_events", "merged_from")


def encode_state(state: UserState) -> bytes:
    """A positional array: [version, scalars…, tuples…, consent, triggers, rfm, cart]."""
    cart = state.cart
    doc: list[Any] = [SCHEMA_VERSION]
    doc += [getattr(state, name) for name in _SCALARS]
    doc += [getattr(state, name) for name in _TUPLES]
    doc.append(state.consent)
    doc.append(state.last_triggers)
    doc.append(state.rfm)
    items = [] if cart is None else [[i.product_id, i.quantity, i.price] for i in cart.items]
    doc.append(
        None
        if cart is None
        else [cart.cart_id, items, cart.last_change_ms, cart.checkout_ms, cart.reminders_sent]
    )
    return orjson.dumps(doc)


def decode_state(raw: bytes) -> UserState:
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, list) or doc[0] != SCHEMA_VERSION:
            raise StateError(f"unsupported user-state layout (expected version {SCHEMA_VERSION})")
        n = len(_SCALARS)
        fields: dict[str, Any] = dict(zip(_SCALARS, doc[1 : 1 + n], strict=True))
        rest = doc[1 + n :]
        for name, value in zip(_TUPLES, rest, strict=False):
            fields[name] = tuple(value)
        consent, triggers, rfm, cart = rest[len(_TUPLES) :]
        fields["consent"] = tuple((c, bool(g)) for c, g in consent)
        fields["last_triggers"] = tuple((t, int(at)) for t, at in triggers)
        fields["rfm"] = tuple(rfm) if rfm is not None else None
        if cart is not None:
            cart_id, items, last_change, checkout, reminders = cart
            fields["cart"] = Cart(
                cart_id,
                tuple(CartItem(p, q, pr) for p, q, pr in items),
                last_change,
                checkout,
                reminders,
            )
        return UserState(**fields)
    except StateError:
        raise
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
