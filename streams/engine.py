"""The engine: one partition's batch of records in, everything they cause out.

The live worker (agents/worker/pipeline.py) and the back-test
(agents/backtest/run.py) call :meth:`Engine.run` and no other part of the core; they differ only in
where the records come from and where the results go.

In: one partition's records in offset order — events of ``user-events`` as
raw bytes (validated here) and internal messages of ``user-events.derived``
(raw, or already decoded) — the partition's clock and deadline index
(:class:`~streams.partition.Partition`), a way to load a user's stored
state, the policy and the churn model. Out: a :class:`~streams.batch.Batch`
— one state write per changed user (its revision advanced once per change),
the triggers in decision order, the internal messages to send, the dead
letters with their reasons; each written user's next deadline is set in the
partition's index.

**Order.** A user's inputs are handled in offset order. Users never see each
other inside the engine (an effect on another key travels as an internal
message), and before each input at time t the user's own deadlines before t
are decided, each at its own time. So a user's triggers and state depend on
the user's own inputs alone, not on how other users' events interleave with
them (``tests/unit/test_engine.py`` shuffles users to prove it).

**Clocks.** On the wall clock a deadline fires once the wall clock passes it,
in the batches of a busy partition and from the worker's timer on an idle
one. On the stream clock a partition's time is the highest event time seen
on it; a deadline fires on the user's next input (before it is applied), or
once the partition is idle (the worker's timer, the back-test's end), or —
only with ``lateness_ms`` set — in-stream once the stream time has passed it
by that much. Without a lateness, no input order can make a deadline fire
before an event of the user that precedes it; with one, an event later than
that behind the stream time is applied, but a deadline already decided stays
decided (docs/ingestion.md).

How each input of a user is decided — the fast path of the common case
included — is :mod:`streams.steps`.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.batch import Batch, DeadLetter, Input, Loader, Malformed, Record, UserWork
from streams.derived import decode_derived
from streams.errors import EventError, StateError
from streams.events import Event, parse_event
from streams.partition import Partition
from streams.steps import Folded, Steps, fold

__all__ = ["Engine", "Folded", "fold"]


class Engine(Steps):
    """The pure batch function with its policy and churn model: each input of
    a batch goes through :class:`~streams.steps.Steps`."""

    # ---- the batch ------------------------------------------------------------
    def run(
        self,
        partition: Partition,
        inputs: Iterable[Input],
        load: Loader,
        *,
        now_ms: int,
        idle: bool = False,
        until_ms: int | None = None,
    ) -> Batch:
        """Handle ``inputs`` of ``partition`` in order, then decide the
        deadlines due on it: up to ``until_ms`` when given, else as on a busy
        partition, or (``idle``) as on one without traffic. ``now_ms`` is the
        wall clock: what events are validated against, and the time on the
        wall clock. ``load`` reads a user's stored state."""
        out = Batch()
        work: dict[bytes, UserWork] = {}

        def working(key: bytes) -> UserWork:
            w = work.get(key)
            if w is None:
                state = load(key)
                w = work[key] = UserWork(state, state.revision if state is not None else 0)
            return w

        for item in inputs:
            if isinstance(item, Record):
                if item.derived:
                    try:
                        message = decode_derived(item.value or b"")
                    except StateError as error:
                        out.malformed.append(Malformed(item, error))
                        continue
                    key = message.key.encode()
                    target = working(key)
                    if item.offset <= target.derived_offset:
                        out.redelivered += 1
                        out.redelivered_keys.append(key)
                        continue
                    self._message(target, message, out)
                    target.derived_offset = item.offset
                    continue
                try:
                    event = parse_event(item.value or b"", now_ms=now_ms, limits=self.limits)
                    key = event.key.encode()
                    if item.key != key:
                        _check_key(item.key, event)
                except EventError as error:
                    out.dead_letters.append(DeadLetter(item, error))
                    continue
                ts = event.timestamp_ms
                if ts > partition.stream_ms:
                    partition.observe(ts)  # a redelivered event was part of the stream too
                w = work.get(key)
                if w is None:
                    w = working(key)
                if item.offset <= w.events_offset:
                    out.redelivered += 1
                    out.redelivered_keys.append(key)
                    continue
                out.events += 1
                types = out.types
                types[event.type] = types.get(event.type, 0) + 1
                if out.earliest_ms is None or ts < out.earliest_ms:
                    out.earliest_ms = ts
                if not self._fold_in_place(w, event, out):
                    self._event_on_frozen(w, event, out)
                w.events_offset = item.offset
            else:
                self._message(working(item.key.encode()), item, out)
        until = until_ms
        if until is None:
            until = partition.idle_until(now_ms) if idle else partition.busy_until(now_ms)
        if until is not None:
            for key in partition.pop_due(until):
                if key not in work:  # a key of this batch is looked at below anyway
                    out.timers_fired += 1
                    self._due(working(key), until, out)
        timers = partition.timers
        for key, w in work.items():
            deadline = self.next_deadline(w.current)
            if until is not None and deadline is not None and w.floor_ms < deadline <= until:
                out.timers_fired += 1
                self._due(w, until, out)
                deadline = self.next_deadline(w.current)
            if deadline is not None and deadline <= w.floor_ms:
                deadline = w.floor_ms + 1  # deciding did not move it (run_until's guard): move on
            timers.set(key, deadline)
            if w.changes:
                stored = w.stored(w.base_revision + w.changes)
                if stored is not None:
                    out.writes[key] = stored
                    out.changes += w.changes
        return out


def _check_key(key: bytes | None, event: Event) -> None:
    """The record key must be the event's user (or anonymous) id: state is
    partitioned by it, so another key would put state on the wrong worker."""
    expected = event.key.encode()
    if key != expected:
        shown = key.decode(errors="replace") if key is not None else None
        raise EventError(
            "key_mismatch",
            "$.user_id",
            f"record key {shown!r} must equal the user_id (or anonymous_id) {event.key!r}",
        )
