"""``userpulse backtest``: what a policy would have sent, replayed on history.

A back-test runs the worker's own engine (:meth:`streams.engine.Engine.run`,
the only call the worker makes into the core) over a history entirely in
this process — no Kafka, no Redis, no topic is read or written — on
**stream time**, as a worker with ``USERPULSE_CLOCK=stream`` does; only the
I/O around the engine differs:

- the input: a REES46 or Retailrocket CSV mapped to events in event-time
  order (:func:`agents.files.datasets.mapped_rows`, as ``userpulse replay``
  reads it), or the project's own JSON Lines — events as ``userpulse
  produce`` takes them, or an export of the ``user-events`` topic — in file
  order (:mod:`agents.files.jsonl`); :mod:`agents.backtest.file` reads it;
- each event becomes a record as a producer would send it, validated by the
  engine (an invalid one is counted by its rejection code, as the worker
  dead-letters it); records go to ``--partitions`` partitions by Kafka's
  default partitioner, each with its own stream time and deadline index
  (default one: a single stream time over all the history);
- internal messages (identity merges, forwards, referral credits) run on
  their key's partition right after the batch that sent them; the worker
  sends them through ``user-events.derived``, so there they land a moment
  later — the two differ only if another event of that key falls into
  that moment (docs/triggers.md);
- deadlines fire as on a stream-clock worker: on the user's next event, or
  in-stream with ``--lateness``, and at the end as an idle worker's timer
  fires them — to each partition's stream time, or to ``--until``;
- the churn model's rule (``bgnbd_p_alive``) is on only with fitted
  parameters (``--model``), as in a worker after the first ``userpulse fit``.

The result is a :class:`~agents.backtest.report.BacktestReport`; trigger ids
are deterministic, so two back-tests of the same input and policy give the
same ids — and the same ids the live run gives
(``tests/e2e/test_differential.py`` runs both on one input).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any

import orjson

from agents.backtest.report import (
    TRIGGER_TYPES,
    BacktestReport,
    TypeStats,
    TypeSummary,
)
from agents.errors import UserpulseError
from agents.files.rows import Rejection
from streams.batch import DeadLetter, Input, Record
from streams.churn import ChurnModel
from streams.codec import encode_state
from streams.contract import Limits
from streams.engine import Engine
from streams.events import Event
from streams.partition import Partition
from streams.partitioning import partition_of
from streams.policy import DEFAULT_POLICY, Policy
from streams.triggers import Trigger
from streams.userstate import STAGE_ERASED, UserState

#: Partitions the back-test splits its input into. One: a single stream time
#: over all the history; N (``--partitions``): exactly what a stream-clock
#: worker on N partitions decides, each partition on its own stream time.
DEFAULT_PARTITIONS = 1
#: Input records per engine round (each partition's share is one batch).
#: One: every internal message lands right after the event that sent it.
DEFAULT_BATCH = 1
#: "now" for a back-test, which has no wall clock: no event is in the future.
_NEVER = 2**62
#: States measured for the in-memory size estimate (a stride sample of all).
SIZE_SAMPLE = 2000
#: Rough bytes of one dict slot plus its key string (the states dict).
_DICT_ENTRY_BYTES = 100


class BacktestError(UserpulseError):
    """The back-test cannot run: unreadable input or policy, input out of order."""


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
        churn_model: ChurnModel | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        lateness_ms: int | None = None,
        batch: int = DEFAULT_BATCH,
        now_ms: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.policy = policy
        self.on_trigger = on_trigger
        #: the wall clock events are validated against, with ``limits``
        #: (default: the contract's) — a worker's at the time it read them;
        #: None, as for history: no wall clock, no event is in the future
        self.now_ms = _NEVER if now_ms is None else now_ms
        limits = limits if limits is not None else Limits()
        if now_ms is None:
            limits = replace(limits, max_future_skew_ms=_NEVER)
        self.engine = Engine(policy, churn_model=churn_model, limits=limits)
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
        self._stats: dict[str, TypeStats] = {}
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
            self.parts[number],
            inputs,
            self.states.get,
            now_ms=self.now_ms,
            idle=idle,
            until_ms=until_ms,
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
            stats = self._stats[trigger.type] = TypeStats()
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
        empty = TypeStats()
        return {t: self._stats.get(t, empty).summary(t, topic) for t, topic in names.items()}

    def size_estimate(self) -> tuple[int, int]:
        """(encoded bytes, in-memory bytes) of the states at their peak count,
        from a stride sample of the current states."""
        states = list(self.states.values())
        if not states:
            return 0, 0
        sample = states[:: max(1, len(states) // SIZE_SAMPLE)]
        encoded = sum(len(encode_state(s)) for s in sample) / len(sample)
        in_memory = sum(python_size(s, set()) for s in sample) / len(sample)
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


def backtest(
    events: Iterable[Event],
    policy: Policy = DEFAULT_POLICY,
    until_ms: int | None = None,
    *,
    on_trigger: Callable[[Trigger], None] | None = None,
    keep_triggers: bool = True,
    churn_model: ChurnModel | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    lateness_ms: int | None = None,
) -> BacktestReport:
    """Back-test ``policy`` on ``events``, in the order a topic would hold them.

    Events later than ``until_ms`` are skipped; the timers run to
    ``until_ms``, or to each partition's stream time without it. The
    triggers are kept in the report (``keep_triggers``) and passed to
    ``on_trigger``. ``churn_model`` turns the churn model's rule on, as a
    worker does once a model was fitted (:class:`streams.churn.ChurnModel`);
    ``partitions`` and ``lateness_ms`` as for :class:`Backtest`.
    """
    started = time.monotonic()
    engine = Backtest(
        policy,
        on_trigger,
        keep_triggers=keep_triggers,
        churn_model=churn_model,
        partitions=partitions,
        lateness_ms=lateness_ms,
    )
    for event in events:
        if until_ms is None or event.timestamp_ms <= until_ms:
            engine.feed(event)
    end = engine.finish(until_ms)
    return engine.report(end, time.monotonic() - started)


def python_size(obj: Any, seen: set[int]) -> int:
    """Bytes of ``obj`` and what it holds (dataclasses, tuples, scalars)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple):
        size += sum(python_size(item, seen) for item in obj)
    elif is_dataclass(obj):
        size += sum(python_size(getattr(obj, f.name), seen) for f in fields(obj))
    return size
