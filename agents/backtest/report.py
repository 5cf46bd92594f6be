"""What a back-test reports: per trigger type how many would fire, when and
for whom, the summary ``userpulse backtest`` prints and the ``--csv`` rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.files.rows import Rejection
from streams import topics
from streams.activation import TYPE_ACTIVATION_STALLED
from streams.cart import TYPE_CART_ABANDONED
from streams.churn import TYPE_CHURN_WARNING, TYPE_WIN_BACK
from streams.policy import DAY_MS
from streams.triggers import (
    TYPE_ERASED,
    TYPE_HEALTH_CHANGED,
    TYPE_SEGMENT_CHANGED,
    TYPE_STAGE_CHANGED,
    TYPE_TIER_CHANGED,
    Trigger,
)

#: Every trigger type with its topic, in the order reports list them.
TRIGGER_TYPES: Mapping[str, str] = {
    TYPE_STAGE_CHANGED: topics.TRIGGERS_LIFECYCLE,
    TYPE_HEALTH_CHANGED: topics.TRIGGERS_LIFECYCLE,
    TYPE_TIER_CHANGED: topics.TRIGGERS_LIFECYCLE,
    TYPE_SEGMENT_CHANGED: topics.TRIGGERS_LIFECYCLE,
    TYPE_ERASED: topics.TRIGGERS_LIFECYCLE,
    TYPE_CART_ABANDONED: topics.TRIGGERS_CART_ABANDONMENT,
    TYPE_CHURN_WARNING: topics.TRIGGERS_CHURN_WARNING,
    TYPE_WIN_BACK: topics.TRIGGERS_CHURN_WARNING,
    TYPE_ACTIVATION_STALLED: topics.TRIGGERS_ACTIVATION_STALLED,
}
#: Column headers of the per-day histogram (the type names are too wide).
SHORT_NAMES: Mapping[str, str] = {
    TYPE_STAGE_CHANGED: "stage",
    TYPE_HEALTH_CHANGED: "health",
    TYPE_TIER_CHANGED: "tier",
    TYPE_SEGMENT_CHANGED: "segment",
    TYPE_ERASED: "erased",
    TYPE_CART_ABANDONED: "cart",
    TYPE_CHURN_WARNING: "churn",
    TYPE_WIN_BACK: "win_back",
    TYPE_ACTIVATION_STALLED: "stalled",
}
#: The columns of ``--csv``: one row per trigger, in the order they were decided.
CSV_COLUMNS = (
    "trigger_id",
    "type",
    "topic",
    "user_id",
    "occurred_at",
    "occurred_at_ms",
    "rule",
    "step",
    "from",
    "to",
    "cart_value",
    "cart_items",
    "gone_days",
    "priority",
    "deliverable",
    "deferred_ms",
)
#: Users listed per type under "top users".
TOP_USERS = 3


@dataclass(frozen=True, slots=True)
class TypeSummary:
    """What one trigger type would have done."""

    type: str
    topic: str
    count: int
    #: distinct users it fired for
    users: int
    first_ms: int | None
    last_ms: int | None
    #: UTC date (``2019-10-01``) of ``occurred_at`` → count, in date order
    per_day: Mapping[str, int]
    #: the users it fired for most often, (user id, count), most first
    top_users: Sequence[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class BacktestProgress:
    phase: str
    rows: int
    events: int
    triggers: int
    rejected: int
    elapsed_s: float
    #: events processed per second since the previous report
    recent_events_per_s: float


@dataclass(frozen=True, slots=True)
class BacktestReport:
    source: str
    layout: str
    presorted: bool
    rows: int
    #: events the rows mapped to (for :func:`backtest`: the events given)
    mapped: int
    #: valid events run through the core (what the worker counts as events)
    events: int
    #: events already among the user's recent event ids: changed nothing
    duplicates: int
    #: events of an anonymous id already merged, applied to its user
    forwarded: int
    rejected: int
    rejected_by_code: Mapping[str, int]
    examples: Sequence[Rejection]
    first_event_ms: int | None
    last_event_ms: int | None
    #: the stream time the timers were run to at the end (``--until`` or the last event)
    end_ms: int | None
    trigger_count: int
    #: every type of :data:`TRIGGER_TYPES`, zero counts included
    by_type: Mapping[str, TypeSummary]
    #: sha256 of every trigger id in decision order: equal on equal back-tests
    trigger_ids_sha256: str
    users: int
    peak_users: int
    #: users with a deadline after ``end_ms`` (their next trigger or change)
    pending_deadlines: int
    #: estimated size of all states as the worker stores them (orjson, changelog)
    state_bytes: int
    #: estimated size of the states dict in this process
    memory_bytes: int
    elapsed_s: float
    #: the triggers, in decision order, when kept (``keep_triggers``)
    triggers: Sequence[Trigger] = ()

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class TypeStats:
    """Counts of one trigger type, kept while the back-test runs."""

    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    per_day: Counter[int] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)

    def add(self, trigger: Trigger) -> None:
        at = trigger.occurred_at_ms
        self.count += 1
        self.first_ms = at if self.first_ms is None else min(self.first_ms, at)
        self.last_ms = at if self.last_ms is None else max(self.last_ms, at)
        self.per_day[at // DAY_MS] += 1
        self.users[trigger.user_id] += 1

    def summary(self, trigger_type: str, topic: str) -> TypeSummary:
        return TypeSummary(
            type=trigger_type,
            topic=topic,
            count=self.count,
            users=len(self.users),
            first_ms=self.first_ms,
            last_ms=self.last_ms,
            per_day={_date(day): n for day, n in sorted(self.per_day.items())},
            top_users=tuple(
                sorted(self.users.items(), key=lambda item: (-item[1], item[0]))[:TOP_USERS]
            ),
        )


def csv_row(trigger: Trigger) -> list[str | int | float]:
    """One ``--csv`` row (:data:`CSV_COLUMNS`); a field a type lacks is empty."""
    reason, payload = trigger.reason, trigger.payload
    delivery = payload.get("delivery") or {}
    items = payload.get("items")
    step = payload.get("step", reason.get("step"))
    return [
        trigger.trigger_id,
        trigger.type,
        trigger.topic,
        trigger.user_id,
        iso(trigger.occurred_at_ms),
        trigger.occurred_at_ms,
        str(reason.get("rule", "")),
        _cell(step),
        _cell(reason.get("from")),
        _cell(reason.get("to")),
        _cell(payload.get("value")),
        sum(int(i["quantity"]) for i in items) if items is not None else "",
        _cell(payload.get("gone_days")),
        _cell(payload.get("priority")),
        _cell(delivery.get("deliverable")),
        _cell(delivery.get("deferred_ms")),
    ]


def _cell(value: Any) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    return str(value)


def iso(ts_ms: int | None) -> str:
    """Epoch ms as ``2019-10-01T00:00:00.000Z`` (``-`` for None)."""
    if ts_ms is None:
        return "-"
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).date().isoformat()


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def summary(report: BacktestReport, *, policy_source: str = "built-in defaults") -> str:
    """What ``userpulse backtest`` prints: totals, the per-type table, the
    per-day histogram and the top users."""
    order = "presorted, streamed" if report.presorted else "sorted in memory"
    layout = f" ({report.layout}, {order})" if report.layout else ""
    rejected = f"{report.rejected:,} rejected" + (
        " (" + ", ".join(f"{c} {n:,}" for c, n in sorted(report.rejected_by_code.items())) + ")"
        if report.rejected
        else ""
    )
    lines = [
        f"back-test of {report.source}{layout}, policy: {policy_source}",
        f"  rows        {report.rows:,} → {report.mapped:,} events: {report.events:,} run, "
        f"{rejected}, {report.duplicates:,} duplicates, {report.forwarded:,} forwarded",
        f"  stream time {iso(report.first_event_ms)} … {iso(report.last_event_ms)}; "
        f"timers run to {iso(report.end_ms)}",
        f"  users       {report.users:,} (peak {report.peak_users:,}; state ≈ "
        f"{_bytes(report.state_bytes)} stored, ≈ {_bytes(report.memory_bytes)} in memory); "
        f"{report.pending_deadlines:,} with a later deadline",
        f"  triggers    {report.trigger_count:,} (trigger ids sha256 "
        f"{report.trigger_ids_sha256[:16]})",
        f"  elapsed     {report.elapsed_s:.1f} s, {report.events_per_s:,.0f} events/s",
    ]
    if report.examples:
        lines.append("  first rejections:")
        lines += [f"    line {r.line}: {r.error}" for r in report.examples]
    lines += ["", *_type_table(report), "", *_day_table(report), "", *_top_users(report)]
    return "\n".join(lines).rstrip()


def _type_table(report: BacktestReport) -> list[str]:
    rows = [("type", "topic", "count", "users", "first occurred_at", "last occurred_at")]
    for s in report.by_type.values():
        rows.append(
            (s.type, s.topic, f"{s.count:,}", f"{s.users:,}", iso(s.first_ms), iso(s.last_ms))
        )
    return _table(rows, right=(2, 3))


def _day_table(report: BacktestReport) -> list[str]:
    fired = [s for s in report.by_type.values() if s.count]
    if not fired:
        return ["per day (UTC): no triggers"]
    days = sorted({day for s in fired for day in s.per_day})
    rows = [("per day (UTC)", *(SHORT_NAMES.get(s.type, s.type) for s in fired))]
    for day in days:
        rows.append((day, *(f"{s.per_day.get(day, 0):,}" for s in fired)))
    return _table(rows, right=tuple(range(1, len(fired) + 1)))


def _top_users(report: BacktestReport) -> list[str]:
    lines = ["top users"]
    for s in report.by_type.values():
        if s.top_users:
            shown = ", ".join(f"{user} ×{n}" for user, n in s.top_users)
            lines.append(f"  {s.type:20} {shown}")
    return lines if len(lines) > 1 else ["top users: none"]


def _table(rows: Sequence[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out
