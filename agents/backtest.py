"""``userpulse backtest``: what a policy would have sent, replayed on history.

A back-test runs the pure core over a dataset entirely in this process — no
Kafka, no Redis, no topic is read or written — on **stream time**, exactly as
the worker runs with ``USERPULSE_CLOCK=stream`` (agents/pipeline.py):

- rows become events in event-time order (:func:`agents.replay.mapped_rows`:
  the same reading, layout detection and ordering as ``userpulse replay``);
- every event is validated with :func:`streams.events.parse_event`, with
  ``now_ms`` = the event's own time + 1 (a back-test has no wall clock, so
  no event is ever too far in the future); rejects are counted by code;
- stream time is the highest event time seen. Before each event, every user
  whose deadline is at or before ``event time − 1`` is decided at that
  deadline (a :class:`~streams.timed.TimerIndex` over all users, popped in
  deadline order), so decisions happen in stream-time order across users;
- per event, for its key: the deadlines before it (above), ``apply``, then
  the triggers ``decide_on_event + win_back`` — the worker's ``process``;
- identity (Alias → Merge, Forward) and referral credits are applied at
  once, in this process, right after the event that caused them; the worker
  sends them through the internal ``user-events.derived`` topic, so there
  they land a moment later, possibly after further events of the other key.
  Both give the same triggers unless an event of that other key falls into
  that moment;
- an erasure (``apply`` returns ``None``) drops the user's state (the worker
  keeps a marker; with events in time order the two behave the same);
- at the end every user is run to the final stream time, or to ``--until``
  (events after ``--until`` are not read);
- the churn model's rule (``bgnbd_p_alive``) is on only with fitted
  parameters (``--model``), as in a worker after the first ``userpulse fit``.

The result is a :class:`BacktestReport`: per trigger type how many would
fire, when (first/last ``occurred_at``, a per-day histogram) and for whom
(distinct users, top users); plus every trigger as a CSV row with ``--csv``.
Trigger ids are deterministic, so two back-tests of the same file with the
same policy give the same ids (compare ``trigger ids sha256``) — and the
same ids the live run gives. The whole state lives in a dict: the report
gives the peak number of users and an estimate of their size.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson

from agents.errors import UserpulseError
from agents.replay import (
    DEFAULT_MAX_LATENESS_S,
    EXAMPLE_REJECTIONS,
    PROGRESS_INTERVAL_S,
    ReadStats,
    Rejection,
    mapped_rows,
)
from agents.settings import load_policy_file as settings_policy_file
from agents.terminal import ProgressLine, fail
from streams import topics
from streams.datasets import LAYOUTS, OrderError
from streams.engine import DeadLetter, Engine, Input, Partition, Record
from streams.errors import ConfigError, EventError
from streams.events import Event, Limits
from streams.partitioning import partition_of
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy
from streams.state import STAGE_ERASED, UserState, encode_state
from streams.timed import (
    TYPE_ACTIVATION_STALLED,
    TYPE_CART_ABANDONED,
    TYPE_CHURN_WARNING,
    TYPE_WIN_BACK,
    PAliveAt,
)
from streams.triggers import (
    TYPE_ERASED,
    TYPE_HEALTH_CHANGED,
    TYPE_SEGMENT_CHANGED,
    TYPE_STAGE_CHANGED,
    TYPE_TIER_CHANGED,
    Trigger,
)

#: Partitions the back-test splits its input into. One: a single stream time
#: over all the history; N (``--partitions``): exactly what a stream-clock
#: worker on N partitions decides, each partition on its own stream time.
DEFAULT_PARTITIONS = 1
#: Input records per engine round (each partition's share is one batch).
#: One: every internal message lands right after the event that sent it.
DEFAULT_BATCH = 1
#: "now" for a back-test, which has no wall clock: no event is in the future.
_NEVER = 2**62

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
#: States measured for the in-memory size estimate (a stride sample of all).
SIZE_SAMPLE = 2000
#: Rough bytes of one dict slot plus its key string (the states dict).
_DICT_ENTRY_BYTES = 100


class BacktestError(UserpulseError):
    """The back-test cannot run: unreadable input or policy, input out of order."""


# ---------------------------------------------------------------------------
# Results


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


# ---------------------------------------------------------------------------
# The engine


@dataclass
class _TypeStats:
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


class Backtest:
    """The worker's engine over one stream of events, on stream time, in memory.

    :meth:`feed` (or :meth:`feed_raw`) each event in the order a topic would
    hold it, then :meth:`finish`. Events are split into ``partitions`` by
    Kafka's default partitioner, as a producer splits them; each partition
    has its own stream time and deadline index and is run through
    :meth:`streams.engine.Engine.run` — the worker's one call into the core.
    Every ``batch`` input records, each partition's share runs as one batch;
    the internal messages a batch sends (identity merges, referral credits,
    forwards) then run on their key's partition, where the worker sends them
    through ``user-events.derived``. Every trigger goes to ``on_trigger`` (if given)
    the moment it is decided.
    """

    def __init__(
        self,
        policy: Policy = DEFAULT_POLICY,
        on_trigger: Callable[[Trigger], None] | None = None,
        *,
        keep_triggers: bool = False,
        p_alive_at: PAliveAt | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        lateness_ms: int | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.policy = policy
        self.on_trigger = on_trigger
        # no wall clock in a back-test: no event is too far in the future
        limits = Limits(max_future_skew_ms=_NEVER)
        self.engine = Engine(policy, p_alive_at=p_alive_at, limits=limits)
        self.partitions = partitions
        self.parts = [Partition(n, "stream", lateness_ms) for n in range(partitions)]
        self.batch = batch
        self.states: dict[bytes, UserState] = {}
        self._buffers: list[list[Record]] = [[] for _ in range(partitions)]
        self._partition_of: dict[bytes, int] = {}
        self._buffered = 0
        self.first_ms: int | None = None
        self.events = 0
        self.duplicates = 0
        self.forwarded = 0
        self.trigger_count = 0
        self.peak_users = 0
        self.offset = 0
        self.kept: list[Trigger] | None = [] if keep_triggers else None
        #: called with each dead letter and the ``origin`` it was fed with
        self.on_dead_letter: Callable[[DeadLetter, Any], None] | None = None
        self.dead_letters = 0
        self._origins: dict[int, Any] = {}
        self._stats: dict[str, _TypeStats] = {}
        self._ids = hashlib.sha256()

    @property
    def stream_ms(self) -> int | None:
        """The highest event time seen on any partition."""
        return max((p.stream_ms for p in self.parts), default=0) or None

    def partition_of(self, key: bytes) -> int:
        number = self._partition_of.get(key)
        if number is None:
            number = self._partition_of[key] = partition_of(key, self.partitions)
        return number

    # ---- events -------------------------------------------------------------
    def feed(self, event: Event) -> None:
        """One event (encoded as a producer would send it)."""
        self.feed_raw(event.key.encode(), orjson.dumps(event.to_dict()))

    def feed_raw(self, key: bytes | None, value: bytes, origin: Any = None) -> None:
        """One record of ``user-events`` as a producer would send it (validated
        by the engine: an invalid one becomes a dead letter, given to
        :attr:`on_dead_letter` with ``origin``). Its offset is its position
        in the input."""
        offset = self.offset
        self.offset += 1
        if origin is not None:
            self._origins[offset] = origin
        number = self.partition_of(key) if key is not None and self.partitions > 1 else 0
        self._buffers[number].append(Record(key, value, offset))
        self._buffered += 1
        if self._buffered >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Run what is buffered (before reading the states or the counts)."""
        self._buffered = 0
        for number, buffer in enumerate(self._buffers):
            if buffer:
                self._buffers[number] = []
                self._run(number, buffer)

    def _run(
        self,
        number: int,
        inputs: Sequence[Input],
        *,
        idle: bool = False,
        until_ms: int | None = None,
    ) -> None:
        """One engine batch on partition ``number``, then the internal
        messages it sent, each on its key's partition."""
        batch = self.engine.run(
            self.parts[number], inputs, self.states.get, now_ms=_NEVER, idle=idle, until_ms=until_ms
        )
        self.events += batch.events
        self.duplicates += batch.duplicates
        self.forwarded += batch.forwarded
        self.dead_letters += len(batch.dead_letters)
        origins = self._origins
        if origins:
            for letter in batch.dead_letters:
                if self.on_dead_letter is not None:
                    self.on_dead_letter(letter, origins.get(letter.record.offset))
            for item in inputs:
                if isinstance(item, Record):
                    origins.pop(item.offset, None)
        if batch.earliest_ms is not None and (
            self.first_ms is None or batch.earliest_ms < self.first_ms
        ):
            self.first_ms = batch.earliest_ms
        self.states.update(batch.writes)
        if len(self.states) > self.peak_users:
            self.peak_users = len(self.states)
        for trigger in batch.triggers:
            self._emit(trigger)
        for message in batch.derived:
            key = message.key.encode()
            self._run(self.partition_of(key) if self.partitions > 1 else 0, [message])

    def _emit(self, trigger: Trigger) -> None:
        self.trigger_count += 1
        stats = self._stats.get(trigger.type)
        if stats is None:
            stats = self._stats[trigger.type] = _TypeStats()
        stats.add(trigger)
        self._ids.update(trigger.trigger_id.encode() + b"\n")
        if self.kept is not None:
            self.kept.append(trigger)
        if self.on_trigger is not None:
            self.on_trigger(trigger)

    # ---- the end ------------------------------------------------------------
    def finish(self, until_ms: int | None = None) -> int | None:
        """Run what is buffered, then every partition's deadlines as an idle
        worker's timer does: to ``until_ms``, or to the partition's own
        stream time. Returns the latest time the timers were run to."""
        self.flush()
        ends = []
        for number, part in enumerate(self.parts):
            end = until_ms if until_ms is not None else part.idle_until(_NEVER)
            if end is None:
                continue
            ends.append(end)
            self._run(number, [], idle=True, until_ms=end)
        return max(ends) if ends else until_ms

    def summaries(self) -> dict[str, TypeSummary]:
        names = {**TRIGGER_TYPES, **{t: "" for t in self._stats if t not in TRIGGER_TYPES}}
        empty = _TypeStats()
        return {t: self._stats.get(t, empty).summary(t, topic) for t, topic in names.items()}

    def size_estimate(self) -> tuple[int, int]:
        """(encoded bytes, in-memory bytes) of the states at their peak count,
        from a stride sample of the current states."""
        states = list(self.states.values())
        if not states:
            return 0, 0
        sample = states[:: max(1, len(states) // SIZE_SAMPLE)]
        encoded = sum(len(encode_state(s)) for s in sample) / len(sample)
        in_memory = sum(_python_size(s, set()) for s in sample) / len(sample)
        return round(encoded * self.peak_users), round(
            (in_memory + _DICT_ENTRY_BYTES) * self.peak_users
        )

    def report(
        self,
        end_ms: int | None,
        elapsed_s: float,
        *,
        source: str = "(events)",
        layout: str = "",
        presorted: bool = True,
        rows: int = 0,
        mapped: int | None = None,
        rejected_by_code: Mapping[str, int] | None = None,
        examples: Sequence[Rejection] = (),
    ) -> BacktestReport:
        by_code = dict(rejected_by_code or {})
        state_bytes, memory_bytes = self.size_estimate()
        return BacktestReport(
            source=source,
            layout=layout,
            presorted=presorted,
            rows=rows,
            mapped=self.events if mapped is None else mapped,
            events=self.events,
            duplicates=self.duplicates,
            forwarded=self.forwarded,
            rejected=sum(by_code.values()),
            rejected_by_code=by_code,
            examples=tuple(examples),
            first_event_ms=self.first_ms,
            last_event_ms=self.stream_ms,
            end_ms=end_ms,
            trigger_count=self.trigger_count,
            by_type=self.summaries(),
            trigger_ids_sha256=self._ids.hexdigest(),
            users=sum(s.stage != STAGE_ERASED for s in self.states.values()),
            peak_users=self.peak_users,
            pending_deadlines=sum(len(p.timers) for p in self.parts),
            state_bytes=state_bytes,
            memory_bytes=memory_bytes,
            elapsed_s=elapsed_s,
            triggers=tuple(self.kept) if self.kept is not None else (),
        )


def _python_size(obj: Any, seen: set[int]) -> int:
    """Bytes of ``obj`` and what it holds (dataclasses, tuples, scalars)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple):
        size += sum(_python_size(item, seen) for item in obj)
    elif is_dataclass(obj):
        size += sum(_python_size(getattr(obj, f.name), seen) for f in fields(obj))
    return size


# ---------------------------------------------------------------------------
# Running


def backtest(
    events: Iterable[Event],
    policy: Policy = DEFAULT_POLICY,
    until_ms: int | None = None,
    *,
    on_trigger: Callable[[Trigger], None] | None = None,
    keep_triggers: bool = True,
    p_alive_at: PAliveAt | None = None,
) -> BacktestReport:
    """Back-test ``policy`` on ``events`` (valid, in event-time order).

    Events later than ``until_ms`` are not read; the timers run to
    ``until_ms``, or to the last event's time without it. The triggers are
    kept in the report (``keep_triggers``) and passed to ``on_trigger``.
    ``p_alive_at`` turns the churn model's rule on, as a worker does once a
    model was fitted (:func:`model_p_alive_at`).
    """
    started = time.monotonic()
    engine = Backtest(policy, on_trigger, keep_triggers=keep_triggers, p_alive_at=p_alive_at)
    for event in events:
        if until_ms is not None and event.timestamp_ms > until_ms:
            break
        engine.feed(event)
    end = engine.finish(until_ms)
    return engine.report(end, time.monotonic() - started)


def backtest_file(
    path: str | Path,
    policy: Policy = DEFAULT_POLICY,
    layout: str = "auto",
    limit: int | None = None,
    until_ms: int | None = None,
    csv_path: str | Path | None = None,
    progress: Callable[[BacktestProgress], None] | None = None,
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    keep_triggers: bool = False,
    p_alive_at: PAliveAt | None = None,
) -> BacktestReport:
    """Back-test ``policy`` on the dataset at ``path`` (``.csv``, ``.csv.gz``, ``-``).

    ``layout``, ``limit`` (rows), ``presorted`` and ``max_lateness_s`` read
    the file as ``userpulse replay`` does (docs/replay.md). Rows after
    ``until_ms`` are not read; the timers run to ``until_ms`` or to the last
    event. Every trigger is written to ``csv_path`` (:data:`CSV_COLUMNS`) when
    given. ``progress`` is called about every second. ``p_alive_at``: as
    for :func:`backtest`.

    Raises :class:`BacktestError` (or another ``UserpulseError``) for an
    unreadable file, an unknown layout or presorted input out of order.
    """
    started = time.monotonic()
    stats = ReadStats()
    by_code: Counter[str] = Counter()
    examples: list[Rejection] = []
    mapped = 0
    out: IO[str] | None = None
    if csv_path is not None:
        try:
            out = open(csv_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise BacktestError(f"cannot write {csv_path}: {exc.strerror or exc}") from None
    writer = csv.writer(out) if out is not None else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    engine = Backtest(
        policy,
        (lambda t: writer.writerow(csv_row(t))) if writer is not None else None,
        keep_triggers=keep_triggers,
        p_alive_at=p_alive_at,
    )
    meter = _Meter(progress, stats, engine, by_code, started)
    stats.tick = meter.maybe

    def reject(rejection: Rejection) -> None:
        by_code[rejection.error.code] += 1
        if len(examples) < EXAMPLE_REJECTIONS:
            examples.append(rejection)

    def on_dead_letter(letter: DeadLetter, origin: Any) -> None:
        line, row, doc = origin
        reject(Rejection(line, "validate", letter.error, row, doc))

    engine.on_dead_letter = on_dead_letter
    try:
        rows = mapped_rows(
            path,
            layout,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            limit=limit,
            stats=stats,
        )
        past_until = False
        for line, row, result in rows:
            if isinstance(result, EventError):
                reject(Rejection(line, "map", result, row))
                continue
            for item in result:
                if until_ms is not None and item.timestamp_ms > until_ms:
                    past_until = True  # the rest is not read
                    break
                mapped += 1
                doc = item.doc
                key = doc.get("user_id") or doc.get("anonymous_id")
                raw_key = key.encode() if isinstance(key, str) else None
                engine.feed_raw(raw_key, orjson.dumps(doc), origin=(line, row, doc))
                if not mapped & 255:
                    meter.maybe()
            if past_until:
                break
        stats.phase = "timers"
        end = engine.finish(until_ms)
    except OrderError as exc:
        raise BacktestError(
            f"{path}: {exc}. The input is not sorted by event time: rerun with --no-presorted "
            "(sorts in memory) or a larger --max-lateness."
        ) from None
    finally:
        if out is not None:
            out.close()
    stats.phase = "done"
    if time.monotonic() - started >= PROGRESS_INTERVAL_S:
        meter.now()
    return engine.report(
        end,
        time.monotonic() - started,
        source=str(path),
        layout=stats.layout,
        presorted=stats.presorted,
        rows=stats.rows,
        mapped=mapped,
        rejected_by_code=by_code,
        examples=examples,
    )


class _Meter:
    """Calls ``report`` about every second with what has been done."""

    def __init__(
        self,
        report: Callable[[BacktestProgress], None] | None,
        stats: ReadStats,
        engine: Backtest,
        rejected: Counter[str],
        started: float,
    ) -> None:
        self.report = report
        self.stats = stats
        self.engine = engine
        self.rejected = rejected
        self.started = self.last = started
        self.last_events = 0

    def maybe(self) -> None:
        if self.report is not None and time.monotonic() - self.last >= PROGRESS_INTERVAL_S:
            self.now()

    def now(self) -> None:
        if self.report is None:
            return
        now = time.monotonic()
        events = self.engine.events
        rate = (events - self.last_events) / (now - self.last) if now > self.last else 0.0
        self.last, self.last_events = now, events
        self.report(
            BacktestProgress(
                self.stats.phase,
                self.stats.rows,
                events,
                self.engine.trigger_count,
                sum(self.rejected.values()),
                now - self.started,
                rate,
            )
        )


# ---------------------------------------------------------------------------
# Output


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


# ---------------------------------------------------------------------------
# The command


def load_policy_file(path: str | None) -> Policy:
    """``--policy``: the policy in the TOML file at ``path`` (None: the defaults)."""
    return settings_policy_file(path, key="--policy", unset="leave --policy out")


def load_model_file(path: str | None) -> PAliveAt | None:
    """``--model``: the JSON record of the model topic (``r``, ``alpha``, ``a``,
    ``b``, ``unit_days``), e.g. saved from ``userpulse tail userpulse.model``;
    None: no model, as before the first ``userpulse fit``."""
    if path is None:
        return None
    from streams.bgnbd import BgNbdError, BgNbdParams

    fix = (
        'a JSON object like {"r": 0.24, "alpha": 4.41, "a": 0.79, "b": 2.43, "unit_days": 7}: '
        "the value of a record of the userpulse.model topic"
    )
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError("--model", f"cannot read {path} ({exc.strerror or exc})", fix) from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError("--model", f"{path} is not JSON ({exc})", fix) from None
    if isinstance(doc, dict) and isinstance(doc.get("value"), dict):
        doc = doc["value"]  # a record as `userpulse tail` prints it
    try:
        params = BgNbdParams(doc["r"], doc["alpha"], doc["a"], doc["b"])
        unit_days = doc.get("unit_days", 7.0)
        if not isinstance(unit_days, int | float) or isinstance(unit_days, bool) or unit_days <= 0:
            raise BgNbdError(f"unit_days must be a positive number, got {unit_days!r}")
    except (KeyError, TypeError) as exc:
        raise ConfigError("--model", f"{path} lacks a parameter ({exc})", fix) from None
    except BgNbdError as exc:
        raise ConfigError("--model", f"{path}: {exc}", fix) from None
    from agents.model import model_p_alive_at

    return model_p_alive_at(params, float(unit_days))


def parse_until(value: str) -> int:
    """``--until``: epoch milliseconds, or ISO-8601 (a time without a zone is UTC)."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither epoch milliseconds nor an ISO-8601 time "
            "(e.g. 2019-10-31T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class _UntilType(click.ParamType):
    name = "ISO|ms"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_until(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command("backtest", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The policy TOML file to test (docs/policy.md); default: the built-in defaults.",
)
@click.option(
    "--layout",
    type=click.Choice(["auto", *LAYOUTS]),
    default="auto",
    show_default=True,
    help="Dataset layout; auto detects it from the CSV header.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every trigger here, one CSV row each.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after N rows.")
@click.option(
    "--until",
    "until_ms",
    type=_UntilType(),
    default=None,
    help="Read events up to this time and run the timers to it (ISO-8601 or epoch ms); "
    "default: the last event's time.",
)
@click.option(
    "--presorted/--no-presorted",
    default=None,
    help="Stream input already sorted by event time (default for rees46), or sort it in "
    "memory (default for retailrocket).",
)
@click.option(
    "--max-lateness",
    "max_lateness_s",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_LATENESS_S,
    show_default=True,
    help="Seconds a row of presorted input may lag the latest row; later stops the back-test.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fitted churn-model parameters (JSON of the userpulse.model topic): turns the "
    "P(alive) churn rule on; default: no model, as before the first `userpulse fit`.",
)
def backtest_command(
    file: str,
    policy_path: str | None,
    layout: str,
    csv_path: str | None,
    limit: int | None,
    until_ms: int | None,
    presorted: bool | None,
    max_lateness_s: float,
    model_path: str | None,
) -> None:
    """Back-test a policy: which triggers would have fired on dataset FILE.

    Replays FILE (.csv, .csv.gz, - for stdin; layouts as for `userpulse
    replay`) through the pipeline's own decisions on stream time, entirely in
    this process: no Kafka, no Redis, no topic is touched. Prints per trigger
    type how many would fire, when and for whom; --csv writes every trigger.
    """
    line = ProgressLine(sys.stderr)

    def printer(p: BacktestProgress) -> None:
        line.show(
            f"{p.phase:9} {p.rows:>12,} rows  {p.events:>12,} events  {p.triggers:>10,} "
            f"triggers  {p.rejected:>8,} rejected  {p.recent_events_per_s:>9,.0f} events/s  "
            f"{p.elapsed_s:6.0f} s",
            p.elapsed_s,
            p.phase,
        )

    try:
        policy = load_policy_file(policy_path)
        p_alive_at = load_model_file(model_path)
        report = backtest_file(
            file,
            policy,
            layout,
            limit,
            until_ms,
            csv_path,
            printer,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            p_alive_at=p_alive_at,
        )
    except (UserpulseError, ConfigError) as exc:
        line.end()
        fail(str(exc))
    except KeyboardInterrupt:
        line.end()
        click.echo("interrupted", err=True)
        sys.exit(130)
    line.end()
    source = policy_path or "built-in defaults"
    if model_path is not None:
        source += f", churn model: {model_path}"
    click.echo(summary(report, policy_source=source))
    if csv_path is not None:
        click.echo(f"\n{report.trigger_count:,} triggers written to {csv_path}")


if __name__ == "__main__":  # python -m agents.backtest FILE (also: userpulse backtest FILE)
    backtest_command()
