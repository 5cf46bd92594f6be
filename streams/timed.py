"""Deciding on time: the triggers that fire on the ABSENCE of an event.

Like Kafka Streams' punctuator or Flink's ``onTimer``, and apart from the
decisions on events: :func:`next_deadline` says when a user's state next needs
a look, :func:`decide_on_time` decides at a given time, :func:`run_until`
replays every deadline up to a time. The caller chooses the clock (wall or
stream time); nothing here reads one. Deciding at the deadline itself — not
at whatever moment the timer woke — makes a live run and a replay give the
same triggers with the same ids.

Rules (thresholds in the policy):

- cart abandonment: reminder *n* at ``last cart change + reminder_delays_s[n]``;
  stops when the cart is ordered or emptied (no open cart), restarts on a new
  cart change;
- activation stalled: at ``sign-up + stalled_after_s[n]`` while not activated;
- churn warning: once per episode, after ``inactivity_s`` without activity, or
  when the BG/NBD P(alive) falls below ``p_alive_threshold`` (with fitted
  parameters); a returning user gets a win-back trigger (on an event);
- health, RFM segment: re-derived on time (at_risk, dormant, recency decay),
  emitted as lifecycle changes.

Marketing triggers (all but lifecycle) respect the delivery policy: a trigger
due in the user's quiet hours, or over the daily cap, is deferred — not
dropped — to the end of the quiet hours or the next day; without consent for
the channel it is flagged (``delivery.deliverable = false``) or suppressed.
"""

from __future__ import annotations

import functools
import heapq
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams import lifecycle, topics
from streams.events import Event
from streams.policy import DAY_MS, DeliveryPolicy, Policy, Precomputed, precomputed
from streams.profile import profile_snapshot
from streams.state import (
    STAGE_ERASED,
    STAGE_MERGED,
    AnyState,
    Cart,
    UserState,
    WorkingState,
    derive,
    evolve,
    freeze,
)
from streams.triggers import Trigger, decide_on_event, trigger_id_for

DEFAULT_DELIVERY = DeliveryPolicy()

TYPE_CART_ABANDONED = "cart_abandoned"
TYPE_ACTIVATION_STALLED = "activation_stalled"
TYPE_CHURN_WARNING = "churn_warning"
TYPE_WIN_BACK = "win_back"

#: P(alive) of a user at a time: supplied by the adapter once BG/NBD
#: parameters are fitted (None: the model rule is off)
PAliveAt = Callable[[UserState, int], float | None]


@dataclass(frozen=True, slots=True)
class _Due:
    """A marketing rule that is due: what to send and how the state records it."""

    due_ms: int
    trigger_type: str
    topic: str
    anchor: tuple[str | int, ...]
    reason: dict[str, Any]
    payload: dict[str, Any]
    #: the changes to the state that record the trigger sent at a time
    record: Callable[[UserState, int], dict[str, Any]]


# ---- when ---------------------------------------------------------------------
def next_deadline(
    state: AnyState | None, policy: Policy, p_alive_at: PAliveAt | None = None
) -> int | None:
    """The earliest time at which :func:`decide_on_time` would change or emit
    something for ``state`` (None: nothing is pending)."""
    return deadline_of(state, precomputed(policy), p_alive_at)


def deadline_of(
    state: AnyState | None, pre: Precomputed, p_alive_at: PAliveAt | None = None
) -> int | None:
    """:func:`next_deadline` with the policy's :class:`Precomputed` values."""
    if state is None or state.event_count == 0:
        return None
    stage = state.stage
    if stage in (STAGE_MERGED, STAGE_ERASED) or state.merged_into is not None:
        return None  # merged into a known user: the user's own state has the timers
    # the times of _pending_times and _churn_model_due (moved past quiet hours
    # and the daily cap), then those at which health or the RFM recency score
    # change by themselves — without building lists: it runs once per event
    policy = pre.policy
    delivery = policy.delivery
    quiet = _quiet_table(state, delivery) if pre.quiet is not None else None
    cap = delivery.daily_cap
    best: int | None = None
    cart = state.cart
    if (
        cart is not None
        and cart.reminders_sent < pre.cart_steps
        and cart.value >= policy.cart.min_value
    ):
        best = _deliver(
            cart.last_change_ms + pre.cart_delays_ms[cart.reminders_sent], state, quiet, cap
        )
    signup = state.signup_ms
    if (
        signup is not None
        and state.activation_ms is None
        and state.stalled_sent < pre.stalled_steps
    ):
        at = _deliver(signup + pre.stalled_ms[state.stalled_sent], state, quiet, cap)
        if best is None or at < best:
            best = at
    last_seen = state.last_seen_ms
    if pre.inactivity_ms > 0 and state.churn_warned_ms is None:
        at = _deliver(last_seen + pre.inactivity_ms, state, quiet, cap)
        if best is None or at < best:
            best = at
    if p_alive_at is not None:
        churn = _churn_model_due(state, policy, p_alive_at)
        if churn is not None:
            at = _deliver(churn, state, quiet, cap)
            if best is None or at < best:
                best = at
    evaluated = state.evaluated_ms  # derivations only count once ahead of it
    at = state.first_seen_ms + pre.new_ms
    if at > evaluated and (best is None or at < best):
        best = at
    at = last_seen + pre.active_ms
    if at > evaluated and (best is None or at < best):
        best = at
    at = last_seen + pre.dormant_ms
    if at > evaluated and (best is None or at < best):
        best = at
    resurrected = state.resurrected_ms
    if resurrected is not None:
        at = resurrected + pre.resurrected_ms
        if at > evaluated and (best is None or at < best):
            best = at
    last_order = state.last_order_ms
    if last_order is not None:
        for recency in pre.recency_ms:
            at = last_order + recency + 1
            if at > evaluated and (best is None or at < best):
                best = at
    return best


def _pending_times(state: UserState, policy: Policy) -> list[int]:
    """``[d.due_ms for d in _pending(state, policy)]`` without building the
    triggers' reasons and payloads: :func:`next_deadline` runs once per event."""
    out: list[int] = []
    cart = state.cart
    delays = policy.cart.reminder_delays_s
    if (
        cart is not None
        and cart.reminders_sent < len(delays)
        and cart.value >= policy.cart.min_value
    ):
        out.append(cart.last_change_ms + delays[cart.reminders_sent] * 1000)
    stalled = policy.activation.stalled_after_s
    if (
        state.signup_ms is not None
        and state.activation_ms is None
        and state.stalled_sent < len(stalled)
    ):
        out.append(state.signup_ms + stalled[state.stalled_sent] * 1000)
    inactivity = policy.churn.inactivity_s
    if inactivity > 0 and state.churn_warned_ms is None:
        out.append(state.last_seen_ms + inactivity * 1000)
    return out


# ---- what ---------------------------------------------------------------------
def _pending(state: UserState, policy: Policy) -> list[_Due]:
    """The next step of every marketing rule that is still to come."""
    out: list[_Due] = []
    cart = state.cart
    delays = policy.cart.reminder_delays_s
    if (
        cart is not None
        and cart.reminders_sent < len(delays)
        and cart.value >= policy.cart.min_value
    ):
        step = cart.reminders_sent + 1
        due = cart.last_change_ms + delays[step - 1] * 1000
        out.append(
            _Due(
                due,
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
                _record_cart_reminder,
            )
        )
    stalled = policy.activation.stalled_after_s
    if (
        state.signup_ms is not None
        and state.activation_ms is None
        and state.stalled_sent < len(stalled)
    ):
        step = state.stalled_sent + 1
        out.append(
            _Due(
                state.signup_ms + stalled[step - 1] * 1000,
                TYPE_ACTIVATION_STALLED,
                topics.TRIGGERS_ACTIVATION_STALLED,
                (state.signup_ms, step),
                {
                    "rule": "not_activated_after_signup",
                    "step": step,
                    "after_s": stalled[step - 1],
                    "signup": state.signup_ms,
                    "activation_events": list(policy.stages.activation_events),
                },
                {"step": step, "signed_up_at": state.signup_ms},
                lambda s, at: {"stalled_sent": s.stalled_sent + 1},
            )
        )
    inactivity = policy.churn.inactivity_s
    if inactivity > 0 and state.churn_warned_ms is None:
        out.append(_churn_due(state, state.last_seen_ms + inactivity * 1000, "fixed_inactivity", {
            "inactive_s": inactivity,
        }))  # fmt: skip
    return out


def _churn_due(state: UserState, due: int, rule: str, numbers: dict[str, Any]) -> _Due:
    return _Due(
        due,
        TYPE_CHURN_WARNING,
        topics.TRIGGERS_CHURN_WARNING,
        (state.last_seen_ms,),
        {"rule": rule, "last_seen": state.last_seen_ms, **numbers},
        {"last_seen": state.last_seen_ms, "priority": _priority(state)},
        lambda s, at: {"churn_warned_ms": at},
    )


def _priority(state: AnyState) -> int:
    """Churn warnings are prioritised by value tier: 1 high, 2 mid, 3 low."""
    return {lifecycle.HIGH: 1, lifecycle.MID: 2}.get(state.tier, 3)


def _churn_model_due(state: AnyState, policy: Policy, p_alive_at: PAliveAt | None) -> int | None:
    """When P(alive) first falls below the threshold (searched by bisection
    over the next year; P(alive) only falls while the user is away)."""
    threshold = policy.churn.p_alive_threshold
    if p_alive_at is None or threshold <= 0 or state.churn_warned_ms is not None:
        return None
    if state.order_count < 2:
        return None  # one purchase: P(alive) is 1 in BG/NBD
    if isinstance(state, WorkingState):
        state = freeze(state)  # the model reads a stored state
    low, high = state.last_seen_ms, state.last_seen_ms + 365 * DAY_MS
    p_high = p_alive_at(state, high)
    if p_high is None or p_high >= threshold:
        return None
    while high - low > 60_000:
        mid = (low + high) // 2
        p = p_alive_at(state, mid)
        if p is not None and p < threshold:
            high = mid
        else:
            low = mid
    return high


def _record_cart_reminder(state: UserState, at: int) -> dict[str, Any]:
    cart = state.cart
    assert cart is not None
    sent = Cart(
        cart.cart_id, cart.items, cart.last_change_ms, cart.checkout_ms, cart.reminders_sent + 1
    )
    return {"cart": sent}


# ---- delivery policy ----------------------------------------------------------
def _zone(state: AnyState, delivery: DeliveryPolicy) -> zoneinfo.ZoneInfo:
    return _zone_named(state.timezone or delivery.default_timezone, delivery.default_timezone)


@functools.lru_cache(maxsize=1024)
def _zone_named(name: str, default: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(default)


_QUARTER_HOUR_MS = 900_000


@functools.lru_cache(maxsize=65536)
def _utc_offset_ms(zone: zoneinfo.ZoneInfo, quarter: int, shift_ms: int = 0) -> int:
    """``zone``'s UTC offset at the start of the ``quarter``-th quarter hour
    since the epoch (offsets change on quarter hours: cached, it is a dict
    lookup), or ``shift_ms`` from it."""
    at = datetime.fromtimestamp(quarter * 900 + shift_ms / 1000, tz=zone)
    offset = at.utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


def quiet_until(at_ms: int, state: AnyState, delivery: DeliveryPolicy) -> int | None:
    """The end of the quiet hours ``at_ms`` falls in (user's local time), or None."""
    table = _quiet_table(state, delivery)
    if table is None:
        return None
    return table.end_of(at_ms) or None


class _QuietTable:
    """The quiet hours in one time zone: quarter hour since the epoch → the
    end of the quiet hours it falls in (0: not quiet), filled as asked.
    Within a quarter hour the local hour and date are the same, so the
    answer is too (a quarter with an offset change, or an offset that is not
    in quarter hours, is computed every time, never remembered)."""

    __slots__ = ("end", "ends", "start", "zone")

    def __init__(self, zone: zoneinfo.ZoneInfo, start: int, end: int) -> None:
        self.zone, self.start, self.end = zone, start, end
        self.ends: dict[int, int] = {}

    def end_of(self, at_ms: int) -> int:
        known = self.ends.get(at_ms // _QUARTER_HOUR_MS)
        return known if known is not None else self.compute(at_ms)

    def compute(self, at_ms: int) -> int:
        zone, start, end = self.zone, self.start, self.end
        quarter = at_ms // _QUARTER_HOUR_MS
        offset = _utc_offset_ms(zone, quarter)
        hour = (at_ms + offset) // 3_600_000 % 24
        quiet = start <= hour < end if start < end else (hour >= start or hour < end)
        answer = 0
        if quiet:
            local = datetime.fromtimestamp(at_ms / 1000, tz=zone)
            end_day = local.date() if hour < end else local.date() + timedelta(days=1)
            end_local = datetime(end_day.year, end_day.month, end_day.day, end, tzinfo=local.tzinfo)
            answer = int(end_local.timestamp() * 1000)
        if offset % _QUARTER_HOUR_MS == 0 and offset == _utc_offset_ms(zone, quarter + 1, -1):
            if len(self.ends) >= _MAX_QUIET_QUARTERS:
                self.ends.clear()
            self.ends[quarter] = answer
        return answer


_MAX_QUIET_QUARTERS = 1 << 16
_QUIET_TABLES: dict[tuple[str | None, str, int, int], _QuietTable | None] = {}


def _quiet_table(state: AnyState, delivery: DeliveryPolicy) -> _QuietTable | None:
    """The quiet hours of ``delivery`` in ``state``'s zone (None: no quiet hours)."""
    hours = delivery.quiet_hours
    if len(hours) != 2:
        return None
    start, end = hours
    key = (state.timezone, delivery.default_timezone, start, end)
    table = _QUIET_TABLES.get(key, _NO_TABLE)
    if table is _NO_TABLE:
        table = None if start == end else _QuietTable(_zone(state, delivery), start, end)
        if len(_QUIET_TABLES) >= 4096:
            _QUIET_TABLES.clear()
        _QUIET_TABLES[key] = table
    return table


_NO_TABLE = _QuietTable(zoneinfo.ZoneInfo("UTC"), 0, 0)


def _deliverable_at(due_ms: int, state: AnyState, delivery: DeliveryPolicy) -> int:
    """``due_ms`` moved past quiet hours and a full daily cap."""
    return _deliver(due_ms, state, _quiet_table(state, delivery), delivery.daily_cap)


def _deliver(due_ms: int, state: AnyState, quiet: _QuietTable | None, cap: int) -> int:
    """:func:`_deliverable_at` with the user's quiet hours and the daily cap at hand."""
    at = due_ms
    for _ in range(4):  # a deferral can land in another window; a few rounds settle it
        later: int | None = None
        if quiet is not None:
            later = quiet.ends.get(at // _QUARTER_HOUR_MS)
            if later is None:
                later = quiet.compute(at)
        if not later:  # not quiet: capped?
            later = None
            if cap > 0:
                day = at // DAY_MS
                if state.sent_day == day and state.sent_count >= cap:
                    later = (day + 1) * DAY_MS
        if later is None:
            return at
        at = later
    return at


# ---- deciding -----------------------------------------------------------------
def decide_on_time(
    state: UserState, now_ms: int, policy: Policy, p_alive_at: PAliveAt | None = None
) -> tuple[UserState, list[Trigger]]:
    """The state and triggers at ``now_ms``: re-derived health and segment
    (lifecycle changes), then every marketing rule that is due and deliverable."""
    if state.stage in (STAGE_MERGED, STAGE_ERASED) or state.merged_into is not None:
        return state, []
    tick = Event(
        event_id=f"time:{now_ms}",
        type="time_passed",
        timestamp_ms=now_ms,
        user_id=state.user_id,
    )
    derived = derive(state, now_ms, policy)
    triggers = [t for t in decide_on_event(state, derived, tick) if t.type != "stage_changed"]
    current = derived
    dues = _pending(current, policy)
    churn = _churn_model_due(current, policy, p_alive_at)
    if churn is not None:
        p = p_alive_at(current, churn) if p_alive_at else None
        dues.append(_churn_due(current, churn, "bgnbd_p_alive", {
            "p_alive": p, "threshold": policy.churn.p_alive_threshold,
        }))  # fmt: skip
    for due in sorted(dues, key=lambda d: d.due_ms):
        if due.due_ms > now_ms or _deliverable_at(due.due_ms, current, policy.delivery) > now_ms:
            continue  # not yet, or deferred by quiet hours / the daily cap
        if due.trigger_type == TYPE_CHURN_WARNING and current.churn_warned_ms is not None:
            continue  # one warning per episode, whichever rule came first
        trigger, current = _emit(due, current, now_ms, policy.delivery)
        if trigger is not None:
            triggers.append(trigger)
    return current, triggers


def _emit(
    due: _Due, state: UserState, now_ms: int, delivery: DeliveryPolicy
) -> tuple[Trigger | None, UserState]:
    consent = state.consented(delivery.channel)
    changes = due.record(state, now_ms)  # none of the fields set below
    if consent is not True and delivery.consent == "suppress":
        return None, evolve(state, changes)  # counted as handled, never sent
    day = now_ms // DAY_MS
    changes["sent_day"] = day
    changes["sent_count"] = state.sent_count + 1 if state.sent_day == day else 1
    changes["last_triggers"] = _stamp(state.last_triggers, due.trigger_type, now_ms)
    recorded = evolve(state, changes)
    trigger = Trigger(
        trigger_id=trigger_id_for(due.trigger_type, state.user_id, *due.anchor),
        type=due.trigger_type,
        topic=due.topic,
        user_id=state.user_id,
        occurred_at_ms=due.due_ms,
        reason=due.reason,
        profile=profile_snapshot(state),
        payload={
            **due.payload,
            "delivery": {
                "channel": delivery.channel,
                "consent": consent,
                "deliverable": consent is True,
                "deferred_ms": now_ms - due.due_ms,
            },
        },
    )
    return trigger, recorded


def _stamp(stamps: tuple[tuple[str, int], ...], kind: str, at: int) -> tuple[tuple[str, int], ...]:
    merged = dict(stamps)
    merged[kind] = at
    return tuple(sorted(merged.items()))


def run_until(
    state: UserState | None, until_ms: int, policy: Policy, p_alive_at: PAliveAt | None = None
) -> tuple[UserState | None, list[Trigger]]:
    """Decide at every deadline up to ``until_ms``, in order (deterministic:
    each decision happens at its own deadline, whenever it is run)."""
    triggers: list[Trigger] = []
    for _ in range(1000):  # a guard; each round moves a deadline or ends
        deadline = next_deadline(state, policy, p_alive_at)
        if state is None or deadline is None or deadline > until_ms:
            return state, triggers
        state, fired = decide_on_time(state, deadline, policy, p_alive_at)
        triggers += fired
    return state, triggers


def win_back(
    old: UserState | None,
    new: UserState | None,
    event: Event,
    delivery: DeliveryPolicy = DEFAULT_DELIVERY,
) -> list[Trigger]:
    """A user warned about churn came back: a win-back trigger with how long
    they were gone. It goes out at once — the user is active right now — so
    quiet hours and the daily cap do not hold it back; consent does (flagged
    or suppressed like every marketing trigger)."""
    if old is None or new is None or old.churn_warned_ms is None:
        return []
    return returned(old.churn_warned_ms, old.last_seen_ms, new, event, delivery)


def returned(
    warned_ms: int, last_seen_ms: int, new: AnyState, event: Event, delivery: DeliveryPolicy
) -> list[Trigger]:
    """:func:`win_back` from the warning time and last activity before ``event``."""
    if event.timestamp_ms < warned_ms:
        return []
    consent = new.consented(delivery.channel)
    if consent is not True and delivery.consent == "suppress":
        return []
    gone_ms = event.timestamp_ms - last_seen_ms
    return [
        Trigger(
            trigger_id=trigger_id_for(TYPE_WIN_BACK, new.user_id, event.event_id),
            type=TYPE_WIN_BACK,
            topic=topics.TRIGGERS_CHURN_WARNING,
            user_id=new.user_id,
            occurred_at_ms=event.timestamp_ms,
            reason={
                "rule": "returned_after_churn_warning",
                "warned_at": warned_ms,
                "gone_s": gone_ms // 1000,
                "event_type": event.type,
            },
            profile=profile_snapshot(new),
            payload={
                "gone_days": round(gone_ms / DAY_MS, 2),
                "priority": _priority(new),
                "delivery": {
                    "channel": delivery.channel,
                    "consent": consent,
                    "deliverable": consent is True,
                    "deferred_ms": 0,
                },
            },
        )
    ]


# ---- the timer index ------------------------------------------------------------
@dataclass
class TimerIndex:
    """Deadlines of one partition's users: O(log n) per change, due users
    popped in deadline order; never a scan of all users per tick."""

    _heap: list[tuple[int, bytes]] = field(default_factory=list)
    _deadline: dict[bytes, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._deadline)

    def set(self, key: bytes, deadline: int | None) -> None:
        """Set (or clear, with None) ``key``'s deadline."""
        if deadline is None:
            self._deadline.pop(key, None)  # its heap entry is dropped when popped
            return
        if self._deadline.get(key) == deadline:
            return
        self._deadline[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 4 * len(self._deadline) + 64:
            self._compact()

    def peek(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> Iterator[tuple[bytes, int]]:
        """Remove and yield (key, deadline) of every key due at ``now_ms``."""
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now_ms:
                return
            deadline, key = heapq.heappop(self._heap)
            del self._deadline[key]
            yield key, deadline

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(d, k) for k, d in self._deadline.items()]
        heapq.heapify(self._heap)
