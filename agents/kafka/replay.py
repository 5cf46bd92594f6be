"""Publishing a dataset to ``user-events``, in event-time order (``userpulse replay``).

The rows come from :func:`agents.files.datasets.mapped_rows` (the mapping of
rows to events is pure and lives in :mod:`streams.datasets`); each event is
paced (``speedup``), validated with the pipeline's own
:func:`~streams.events.parse_event` and published keyed by user through
:class:`~agents.kafka.producer.EventProducer`. A row that cannot be mapped,
or an event that fails validation, is *rejected* — counted, written to the
rejected file — and the replay goes on. A presorted input that is out of
order stops the replay with :class:`~agents.files.rows.ReplayError` naming
the rerun (docs/replay.md).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from agents.errors import UserpulseError
from agents.files.datasets import mapped_rows
from agents.files.rows import (
    DEFAULT_MAX_LATENESS_S,
    EXAMPLE_REJECTIONS,
    PROGRESS_INTERVAL_S,
    ReadStats,
    Rejection,
    ReplayError,
)
from agents.kafka.admin import ensure_topics
from agents.kafka.producer import EventProducer
from agents.settings import Settings
from streams.contract import Limits
from streams.datasets import OrderError
from streams.errors import EventError
from streams.events import parse_event
from streams.userstate import DEDUP_WINDOW

#: EventProducer options for bulk sending, measured with benchmarks/replay.py: against
#: EventProducer's linger 5 ms / 16 KiB, big batches add about a quarter and gzip (zlib
#: runs outside the GIL) about 40 % on top — ≈ 1.8× in all — and sends several times
#: fewer bytes.
DEFAULT_PRODUCER_OPTIONS: Mapping[str, Any] = {
    "linger_ms": 50,
    "batch_size": 512 * 1024,
    "compression_type": "gzip",
}
#: Events between two flushes: bounds the producer's buffered records (kafka-python 3
#: has no memory limit of its own) and reports delivery failures early.
FLUSH_EVERY_EVENTS = 50_000


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay; carries the report of what was done until then."""

    def __init__(self, report: ReplayReport) -> None:
        super().__init__("replay interrupted")
        self.report = report


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    phase: str
    rows: int
    sent: int
    rejected: int
    elapsed_s: float
    #: Events sent per second since the previous report.
    recent_events_per_s: float


@dataclass(frozen=True, slots=True)
class ReplayReport:
    source: str
    layout: str
    presorted: bool
    dry_run: bool
    rows: int
    #: Events the rows mapped to (``session_started`` included).
    events: int
    #: Events that passed validation and were sent (in a dry run: would have been).
    sent: int
    #: Rows that could not be mapped plus events that failed validation.
    rejected: int
    rejected_by_code: Mapping[str, int]
    examples: Sequence[Rejection]
    first_event_ms: int | None
    last_event_ms: int | None
    elapsed_s: float
    topics_created: Sequence[str] = ()

    @property
    def events_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Sink(Protocol):
    def send(self, doc: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class _DryRun:
    """Validates like EventProducer.send, sends nothing."""

    def __init__(self, settings: Settings) -> None:
        self.limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=settings.max_future_skew_s * 1000,
        )

    def send(self, doc: Mapping[str, Any]) -> None:
        parse_event(orjson.dumps(doc), now_ms=time.time_ns() // 1_000_000, limits=self.limits)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Progress:
    """Counts what was sent and rejected; calls ``report`` about every second."""

    def __init__(self, report: Callable[[ReplayProgress], None] | None, stats: ReadStats) -> None:
        self.report = report
        self.stats = stats
        self.started = self.last = time.monotonic()
        self.last_sent = 0
        self.sent = 0
        self.rejected = 0

    def maybe(self) -> None:
        if self.report is not None and time.monotonic() - self.last >= PROGRESS_INTERVAL_S:
            self.now()

    def now(self) -> None:
        if self.report is None:
            return
        now = time.monotonic()
        rate = (self.sent - self.last_sent) / (now - self.last) if now > self.last else 0.0
        self.last, self.last_sent = now, self.sent
        s = self.stats
        self.report(
            ReplayProgress(s.phase, s.rows, self.sent, self.rejected, now - self.started, rate)
        )


def replay_file(
    settings: Settings,
    path: str | Path,
    layout: str = "auto",
    speedup: float = 0.0,
    limit: int | None = None,
    rejected_path: str | Path | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    dry_run: bool = False,
    producer_options: Mapping[str, Any] | None = None,
) -> ReplayReport:
    """Publish the dataset at ``path`` to ``user-events`` in event-time order.

    ``speedup`` 0 sends as fast as possible; N sends at N× real time (the
    wall-clock gap between two events is their event-time gap / N).
    ``limit`` stops after that many rows. Rejected rows and events go to
    ``rejected_path`` as JSON lines when given. ``progress`` is called about
    every second. ``dry_run`` maps and validates only: no Kafka needed.
    ``producer_options`` override :data:`DEFAULT_PRODUCER_OPTIONS`
    (kafka-python ``KafkaProducer`` options).

    Raises :class:`ReplayError` for an unreadable file, an unknown layout or
    presorted input out of order; :class:`ReplayInterrupted` on Ctrl-C.
    """
    if speedup < 0:
        raise ReplayError(f"speedup must be 0 (as fast as possible) or positive, not {speedup}")
    stats = ReadStats()
    meter = _Progress(progress, stats)
    stats.tick = meter.maybe
    by_code: Counter[str] = Counter()
    examples: list[Rejection] = []
    events = 0
    first_ms: int | None = None
    last_ms: int | None = None
    created: list[str] = []
    try:
        rejected_file = open(rejected_path, "wb") if rejected_path is not None else None  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot write {rejected_path}: {exc.strerror or exc}") from None

    def reject(rejection: Rejection) -> None:
        meter.rejected += 1
        by_code[rejection.error.code] += 1
        if len(examples) < EXAMPLE_REJECTIONS:
            examples.append(rejection)
        if rejected_file is not None:
            rejected_file.write(rejection.to_json() + b"\n")

    def report() -> ReplayReport:
        return ReplayReport(
            source=str(path),
            layout=stats.layout,
            presorted=stats.presorted,
            dry_run=dry_run,
            rows=stats.rows,
            events=events,
            sent=meter.sent,
            rejected=meter.rejected,
            rejected_by_code=dict(by_code),
            examples=tuple(examples),
            first_event_ms=first_ms,
            last_event_ms=last_ms,
            elapsed_s=time.monotonic() - meter.started,
            topics_created=tuple(created),
        )

    sink: _Sink | None = None
    try:
        if dry_run:
            sink = _DryRun(settings)
        else:
            created = ensure_topics(settings)
            sink = EventProducer(
                settings, **{**DEFAULT_PRODUCER_OPTIONS, **(producer_options or {})}
            )
        pace = _Pacer(speedup, meter)
        rows = mapped_rows(
            path,
            layout,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            limit=limit,
            stats=stats,
        )
        for line, row, result in rows:
            if isinstance(result, EventError):
                reject(Rejection(line, "map", result, row))
                continue
            for mapped in result:
                events += 1
                pace.wait_for(mapped.timestamp_ms)
                try:
                    sink.send(mapped.doc)
                except EventError as error:
                    reject(Rejection(line, "validate", error, row, mapped.doc))
                    continue
                meter.sent += 1
                if first_ms is None:
                    first_ms = mapped.timestamp_ms
                last_ms = mapped.timestamp_ms
                if not meter.sent % FLUSH_EVERY_EVENTS:
                    sink.flush()
                if not meter.sent & 255:
                    meter.maybe()
        stats.phase = "flushing"
        if time.monotonic() - meter.started >= PROGRESS_INTERVAL_S:
            meter.now()
        sink.close()
        sink = None
        stats.phase = "done"
        return report()
    except OrderError as exc:
        if sink is not None:
            sink.close()
            sink = None
        already = (
            ""
            if dry_run or not meter.sent
            else f" {meter.sent:,} events before that line were sent; the pipeline de-duplicates "
            f"only each user's last {DEDUP_WINDOW} event ids, so rerun into a fresh "
            "USERPULSE_TOPIC_PREFIX for exact counts."
        )
        raise ReplayError(
            f"{path}: {exc}. The input is not sorted by event time: rerun with --no-presorted "
            f"(sorts in memory) or a larger --max-lateness.{already}"
        ) from None
    except KeyboardInterrupt:
        if sink is not None:
            sink.close()
            sink = None
        raise ReplayInterrupted(report()) from None
    finally:
        if sink is not None:  # an error is on its way out; still deliver what was sent
            with contextlib.suppress(UserpulseError):
                sink.close()
        if rejected_file is not None:
            rejected_file.close()


class _Pacer:
    """Sleeps so that events go out at ``speedup``× the pace of their event times."""

    def __init__(self, speedup: float, meter: _Progress) -> None:
        self.speedup = speedup
        self.meter = meter
        self.origin: tuple[int, float] | None = None

    def wait_for(self, ts_ms: int) -> None:
        if self.speedup <= 0:
            return
        if self.origin is None:
            self.origin = (ts_ms, time.monotonic())
            return
        first_ms, started = self.origin
        due = started + (ts_ms - first_ms) / 1000 / self.speedup
        while (delay := due - time.monotonic()) > 0:
            time.sleep(min(delay, PROGRESS_INTERVAL_S))
            self.meter.maybe()
