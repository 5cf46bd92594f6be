"""The delivery rules of marketing triggers (cart reminders, activation
nudges, churn warnings, win-backs): quiet hours, the daily cap, consent.

A rule that is due says so with a :class:`Pending` trigger. A trigger due in
the user's quiet hours (the user's local time), or over the daily cap, is
deferred — not dropped — to the end of the quiet hours or the next UTC day
(:func:`deliverable_at`); when it goes out (:func:`emit`) it counts towards
the cap, and without consent for the channel it is flagged
(``delivery.deliverable = false``) or suppressed, as the policy says.
Lifecycle triggers are not marketing: none of this applies to them.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.policy import DAY_MS, DeliveryPolicy
from streams.profile import profile_snapshot
from streams.triggers import Trigger, state_trigger_id
from streams.userstate import AnyState, UserState, evolve

DEFAULT_DELIVERY = DeliveryPolicy()


@dataclass(frozen=True, slots=True)
class Pending:
    """A marketing trigger that is due: what to send and how the state records it."""

    due_ms: int
    trigger_type: str
    topic: str
    anchor: tuple[str | int, ...]
    reason: dict[str, Any]
    payload: dict[str, Any]
    #: the changes to the state that record the trigger sent at a time
    record: Callable[[UserState, int], dict[str, Any]]


# ---- quiet hours ----------------------------------------------------------------
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
    table = quiet_table(state, delivery)
    if table is None:
        return None
    return table.end_of(at_ms) or None


class QuietTable:
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
_QUIET_TABLES: dict[tuple[str | None, str, int, int], QuietTable | None] = {}


def quiet_table(state: AnyState, delivery: DeliveryPolicy) -> QuietTable | None:
    """The quiet hours of ``delivery`` in ``state``'s zone (None: no quiet hours)."""
    hours = delivery.quiet_hours
    if len(hours) != 2:
        return None
    start, end = hours
    key = (state.timezone, delivery.default_timezone, start, end)
    table = _QUIET_TABLES.get(key, _NO_TABLE)
    if table is _NO_TABLE:
        table = None if start == end else QuietTable(_zone(state, delivery), start, end)
        if len(_QUIET_TABLES) >= 4096:
            _QUIET_TABLES.clear()
        _QUIET_TABLES[key] = table
    return table


_NO_TABLE = QuietTable(zoneinfo.ZoneInfo("UTC"), 0, 0)


# ---- when: quiet hours and the daily cap -------------------------------------------
def deliverable_at(due_ms: int, state: AnyState, delivery: DeliveryPolicy) -> int:
    """``due_ms`` moved past quiet hours and a full daily cap."""
    return deliver(due_ms, state, quiet_table(state, delivery), delivery.daily_cap)


def deliver(due_ms: int, state: AnyState, quiet: QuietTable | None, cap: int) -> int:
    """:func:`deliverable_at` with the user's quiet hours and the daily cap at hand."""
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


# ---- going out: consent, and the count towards the cap ------------------------------
def suppressed(consent: bool | None, delivery: DeliveryPolicy) -> bool:
    """Whether a trigger without consent (``consent`` not True) is never sent."""
    return consent is not True and delivery.consent == "suppress"


def delivery_block(
    delivery: DeliveryPolicy, consent: bool | None, deferred_ms: int
) -> dict[str, Any]:
    """The ``payload.delivery`` of a marketing trigger: the channel, the
    user's consent for it, whether it may be delivered, how long it waited."""
    return {
        "channel": delivery.channel,
        "consent": consent,
        "deliverable": consent is True,
        "deferred_ms": deferred_ms,
    }


def emit(
    due: Pending, state: UserState, now_ms: int, delivery: DeliveryPolicy
) -> tuple[Trigger | None, UserState]:
    """``due`` sent at ``now_ms`` (None when suppressed), and the state that
    records it: the rule's own record, the day's count and the last time of
    each trigger type."""
    consent = state.consented(delivery.channel)
    changes = due.record(state, now_ms)  # none of the fields set below
    if suppressed(consent, delivery):
        return None, evolve(state, changes)  # counted as handled, never sent
    day = now_ms // DAY_MS
    changes["sent_day"] = day
    changes["sent_count"] = state.sent_count + 1 if state.sent_day == day else 1
    changes["last_triggers"] = _stamp(state.last_triggers, due.trigger_type, now_ms)
    recorded = evolve(state, changes)
    trigger = Trigger(
        trigger_id=state_trigger_id(due.trigger_type, state, *due.anchor),
        type=due.trigger_type,
        topic=due.topic,
        user_id=state.user_id,
        occurred_at_ms=due.due_ms,
        reason=due.reason,
        profile=profile_snapshot(state),
        payload={**due.payload, "delivery": delivery_block(delivery, consent, now_ms - due.due_ms)},
    )
    return trigger, recorded


def _stamp(stamps: tuple[tuple[str, int], ...], kind: str, at: int) -> tuple[tuple[str, int], ...]:
    merged = dict(stamps)
    merged[kind] = at
    return tuple(sorted(merged.items()))
