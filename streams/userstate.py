"""The per-user state as data: :class:`UserState` (frozen, what is stored),
:class:`WorkingState` (the same fields, mutable, what the engine folds a
batch into) and the fast per-field copies between them (:func:`evolve`,
:func:`thaw`, :func:`freeze`, :func:`fresh`). The rules that change a state
are in :mod:`streams.state`, its stored layout in :mod:`streams.codec`.
docs/state.md describes every field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from streams import lifecycle
from streams.policy import DAY_MS

SCHEMA_VERSION = 6

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
#: what remains of an erased user: no facts and no id (the table's key is the
#: only place it stays), only the erasure time (older events are refused), the
#: revision (newer writes stay ordered) and the input offsets applied
#: (redelivered records are recognised)
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
    #: offset of the last record of ``user-events`` / ``user-events.derived``
    #: applied (the user's partition; -1: none): a record at or below it is a
    #: redelivery (docs/reliability.md)
    events_offset: int = -1
    derived_offset: int = -1
    #: the time of the erasure this history began after (0: never erased): a
    #: returning user's trigger ids are new (:func:`streams.triggers.subject_of`)
    erased_ms: int = 0
    #: how many erasures of this key the history began after (0: never
    #: erased); anchors a returning user's trigger ids with ``erased_ms``, so
    #: two erasures at the same event time still give new ids
    erasures: int = 0
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
    events_offset: int
    derived_offset: int
    erased_ms: int
    erasures: int
    schema_version: int

    @property
    def ltv(self) -> float:
        """Lifetime value: revenue net of refunds."""
        return _ltv(self.revenue, self.refunds)

    def consented(self, channel: str) -> bool | None:
        return _consented(self.consent, channel)


#: a state as the rules read it: stored (frozen) or inside a batch (working)
AnyState = UserState | WorkingState

#: the names of UserState's fields, in order
FIELD_NAMES = tuple(f.name for f in fields(UserState))
if dict(WorkingState.__annotations__) != {
    name: UserState.__annotations__[name] for name in FIELD_NAMES
}:  # pragma: no cover - a field added to one class and not the other
    raise TypeError("WorkingState must declare exactly UserState's fields, in order")


def compile_per_field(name: str, lines: list[str], **scope: Any) -> Any:
    """Compile one of the per-field functions below: one line per field, no
    loop, no keyword packing, and a frozen state's fields set through their
    slots (``_s_<field>(state, value)``: what a frozen dataclass's
    ``__init__`` does, without looking ``object.__setattr__`` up each time) —
    2–4× faster than the generic ways."""
    setters = {f"_s_{n}": UserState.__dict__[n].__set__ for n in FIELD_NAMES}
    namespace: dict[str, Any] = {"_new": object.__new__, **setters, **scope}
    exec("\n".join(lines), namespace)
    return namespace[name]


#: ``evolve(state, {"field": value, ...})`` — ``replace(state, **changes)``, faster.
evolve: Callable[[UserState, dict[str, Any]], UserState] = compile_per_field(
    "evolve",
    [
        "def evolve(state, changes):",
        "    if not _known.issuperset(changes):",
        "        raise TypeError(f'UserState has no field(s) {sorted(set(changes) - _known)}')",
        "    new = _new(UserState)",
        *[f"    _s_{n}(new, state.{n})" for n in FIELD_NAMES],
        "    for name, value in changes.items():",
        "        _setters[name](new, value)",
        "    return new",
    ],
    UserState=UserState,
    _known=frozenset(FIELD_NAMES),
    _setters={n: UserState.__dict__[n].__set__ for n in FIELD_NAMES},
)
#: ``thaw(state)``: a :class:`WorkingState` with ``state``'s fields.
thaw: Callable[[UserState], WorkingState] = compile_per_field(
    "thaw",
    [
        "def thaw(state):",
        "    new = _new(WorkingState)",
        *[f"    new.{n} = state.{n}" for n in FIELD_NAMES],
        "    return new",
    ],
    WorkingState=WorkingState,
)
#: ``freeze(working)``: the :class:`UserState` with ``working``'s fields.
freeze: Callable[[WorkingState], UserState] = compile_per_field(
    "freeze",
    [
        "def freeze(working):",
        "    new = _new(UserState)",
        *[f"    _s_{n}(new, working.{n})" for n in FIELD_NAMES],
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
fresh: Callable[[str, int], WorkingState] = compile_per_field(
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
