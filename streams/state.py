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
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

from streams import lifecycle
from streams.errors import StateError
from streams.events import Event
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy, Precomputed, precomputed

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
    #: the sum of quantity × price, rounded to cents (computed once, on creation)
    value: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = round(sum(i.quantity * i.price for i in self.items), 2)
        object.__setattr__(self, "value", value)


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
        return _ltv(self.revenue, self.refunds)

    def active_days(self, days: int, now_ms: int) -> int:
        """On how many of the ``days`` UTC days up to ``now_ms`` the user was active."""
        limit = days - max(0, now_ms // DAY_MS - self.activity_day)
        if limit <= 0:
            return 0
        return bin(self.activity_bits & ((1 << limit) - 1)).count("1")

    def consented(self, channel: str) -> bool | None:
        return _consented(self.consent, channel)


def _ltv(revenue: float, refunds: float) -> float:
    net = revenue - refunds
    return net if net == 0 else round(net, 2)  # round(±0.0, 2) is ±0.0 itself


def _consented(consent: tuple[tuple[str, bool], ...], channel: str) -> bool | None:
    return dict(consent).get(channel)


class WorkingState:
    """A user's state while the engine folds a batch into it: the fields of
    :class:`UserState` (checked at import), mutable. The engine thaws a
    stored state once per batch (:func:`thaw`), folds each event into it with
    plain attribute updates (:func:`fold_into`) and freezes it once
    (:func:`freeze`) for the write."""

    __slots__ = tuple(f.name for f in fields(UserState))

    user_id: str
    first_seen_ms: int
    last_seen_ms: int
    event_count: int
    signup_ms: int | None
    activation_ms: int | None
    retained_ms: int | None
    first_order_ms: int | None
    last_order_ms: int | None
    order_count: int
    revenue: float
    refunds: float
    sessions: int
    activity_day: int
    activity_bits: int
    cart: Cart | None
    channel: str | None
    campaign: str | None
    referrer_id: str | None
    referral_count: int
    recent_referrals: tuple[str, ...]
    consent: tuple[tuple[str, bool], ...]
    last_triggers: tuple[tuple[str, int], ...]
    timezone: str | None
    stalled_sent: int
    churn_warned_ms: int | None
    sent_day: int
    sent_count: int
    evaluated_ms: int
    stage: str
    health: str
    resurrected_ms: int | None
    rfm: tuple[int, int, int] | None
    segment: str | None
    tier: str
    recent_events: tuple[str, ...]
    merged_from: tuple[str, ...]
    merged_into: str | None
    revision: int
    schema_version: int

    @property
    def ltv(self) -> float:
        """Lifetime value: revenue net of refunds."""
        return _ltv(self.revenue, self.refunds)

    def consented(self, channel: str) -> bool | None:
        return _consented(self.consent, channel)


#: a state as the rules read it: stored (frozen) or inside a batch (working)
AnyState = UserState | WorkingState

_FIELDS = tuple(f.name for f in fields(UserState))
if dict(WorkingState.__annotations__) != {
    name: UserState.__annotations__[name] for name in _FIELDS
}:  # pragma: no cover - a field added to one class and not the other
    raise TypeError("WorkingState must declare exactly UserState's fields, in order")


def _compile(name: str, lines: list[str], **scope: Any) -> Any:
    """Compile one of the per-field functions below: one line per field, no
    loop, no keyword packing, and a frozen state's fields set through their
    slots (``_s_<field>(state, value)``: what a frozen dataclass's
    ``__init__`` does, without looking ``object.__setattr__`` up each time) —
    2–4× faster than the generic ways."""
    setters = {f"_s_{n}": UserState.__dict__[n].__set__ for n in _FIELDS}
    namespace: dict[str, Any] = {"_new": object.__new__, **setters, **scope}
    exec("\n".join(lines), namespace)
    return namespace[name]


#: ``evolve(state, {"field": value, ...})`` — ``replace(state, **changes)``, faster.
evolve: Callable[[UserState, dict[str, Any]], UserState] = _compile(
    "evolve",
    [
        "def evolve(state, changes):",
        "    if not _known.issuperset(changes):",
        "        raise TypeError(f'UserState has no field(s) {sorted(set(changes) - _known)}')",
        "    new = _new(UserState)",
        "    get = changes.get",
        *[f"    _s_{n}(new, get({n!r}, state.{n}))" for n in _FIELDS],
        "    return new",
    ],
    UserState=UserState,
    _known=frozenset(_FIELDS),
)
#: ``thaw(state)``: a :class:`WorkingState` with ``state``'s fields.
thaw: Callable[[UserState], WorkingState] = _compile(
    "thaw",
    [
        "def thaw(state):",
        "    new = _new(WorkingState)",
        *[f"    new.{n} = state.{n}" for n in _FIELDS],
        "    return new",
    ],
    WorkingState=WorkingState,
)
#: ``freeze(working)``: the :class:`UserState` with ``working``'s fields.
freeze: Callable[[WorkingState], UserState] = _compile(
    "freeze",
    [
        "def freeze(working):",
        "    new = _new(UserState)",
        *[f"    _s_{n}(new, working.{n})" for n in _FIELDS],
        "    return new",
    ],
    UserState=UserState,
)
_DEFAULTS = {
    f.name: f.default
    for f in fields(UserState)
    if f.name not in ("user_id", "first_seen_ms", "last_seen_ms")
}
#: ``fresh(user_id, at_ms)``: the working state of :func:`new_state`.
fresh: Callable[[str, int], WorkingState] = _compile(
    "fresh",
    [
        "def fresh(user_id, at_ms):",
        "    new = _new(WorkingState)",
        "    new.user_id = user_id",
        "    new.first_seen_ms = at_ms",
        "    new.last_seen_ms = at_ms",
        *[f"    new.{n} = _d_{n}" for n in _DEFAULTS],
        "    return new",
    ],
    WorkingState=WorkingState,
    **{f"_d_{n}": v for n, v in _DEFAULTS.items()},
)


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
    state.recent_events = _remember(state.recent_events, digest, DEDUP_WINDOW)
    _activity(state, ts)
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
    derive_into(state, last_seen if last_seen >= evaluated else evaluated, pre)


_CART_EVENTS = frozenset(("product_added", "product_removed"))


def _activity(state: WorkingState, ts: int) -> None:
    """Set the bit of ``ts``'s UTC day in the rolling activity bitmap."""
    day = ts // DAY_MS
    bits = state.activity_bits
    if bits == 0:
        state.activity_day = day
        state.activity_bits = 1
        return
    if day > state.activity_day:
        shifted = (bits << (day - state.activity_day)) & _ACTIVITY_MASK
        state.activity_day = day
        state.activity_bits = shifted | 1
        return
    offset = state.activity_day - day
    if offset < ACTIVITY_DAYS:
        state.activity_bits = bits | (1 << offset)


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
    return _encode(state, orjson.dumps)


def _cart_doc(cart: Cart | None) -> list[Any] | None:
    if cart is None:
        return None
    items = [[i.product_id, i.quantity, i.price] for i in cart.items]
    return [cart.cart_id, items, cart.last_change_ms, cart.checkout_ms, cart.reminders_sent]


#: the array of :func:`encode_state`, built in one expression
_encode: Callable[[UserState, Callable[[Any], bytes]], bytes] = _compile(
    "encode",
    [
        "def encode(s, dumps):",
        "    return dumps([",
        f"        {SCHEMA_VERSION},",
        *[f"        s.{n}," for n in (*_SCALARS, *_TUPLES, "consent", "last_triggers", "rfm")],
        "        _cart_doc(s.cart),",
        "    ])",
    ],
    _cart_doc=_cart_doc,
)
_LENGTH = 1 + len(_SCALARS) + len(_TUPLES) + 4


def decode_state(raw: bytes) -> UserState:
    """The state :func:`encode_state` encoded (a :class:`StateError` when ``raw`` is not one)."""
    try:
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
    if type(doc) is list and len(doc) == _LENGTH and doc[0] == SCHEMA_VERSION:
        try:
            return _decode(doc)
        except (TypeError, ValueError, IndexError):
            pass  # named below
    return _decode_checked(doc)


def _decode_cart(cart: list[Any] | None) -> Cart | None:
    if cart is None:
        return None
    cart_id, items, last_change, checkout, reminders = cart
    return Cart(
        cart_id, tuple(CartItem(p, q, pr) for p, q, pr in items), last_change, checkout, reminders
    )


#: a well-formed array of :func:`encode_state` → the state, built in one go
_decode: Callable[[list[Any]], UserState] = _compile(
    "decode",
    [
        "def decode(doc):",
        "    new = _new(UserState)",
        *[f"    _s_{n}(new, doc[{i}])" for i, n in enumerate(_SCALARS, start=1)],
        *[
            f"    _s_{n}(new, tuple(doc[{i}]))"
            for i, n in enumerate(_TUPLES, start=1 + len(_SCALARS))
        ],
        f"    _s_consent(new, tuple((c, bool(g)) for c, g in doc[{1 + len(_SCALARS) + 3}]))",
        f"    _s_last_triggers(new, tuple((t, int(at)) for t, at in doc[{1 + len(_SCALARS) + 4}]))",
        f"    rfm = doc[{1 + len(_SCALARS) + 5}]",
        "    _s_rfm(new, tuple(rfm) if rfm is not None else None)",
        f"    _s_cart(new, _decode_cart(doc[{1 + len(_SCALARS) + 6}]))",
        f"    _s_schema_version(new, {SCHEMA_VERSION})",
        "    return new",
    ],
    _decode_cart=_decode_cart,
    UserState=UserState,
)
if set(_SCALARS) | set(_TUPLES) | {
    "consent",
    "last_triggers",
    "rfm",
    "cart",
    "schema_version",
} != set(_FIELDS):  # pragma: no cover - a field added to UserState but not to the layout
    raise TypeError("the stored layout must hold every field of UserState")


def _decode_checked(doc: Any) -> UserState:
    """:func:`decode_state` of any document, with what is wrong with it."""
    try:
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
        fields["cart"] = _decode_cart(cart)
        return UserState(**fields)
    except StateError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
