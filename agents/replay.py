"""``userpulse replay``: publish a public e-commerce dataset as userpulse events.

The mapping of rows to events is pure and lives in :mod:`streams.datasets`;
this module reads the file (``.csv``, ``.csv.gz`` or stdin), puts the rows in
event-time order, paces them (``--speedup``), validates every event with the
pipeline's own :func:`~streams.events.parse_event` and publishes it keyed by
user through :class:`~agents.producer.EventProducer`. A row that cannot be
mapped, or an event that fails validation, is *rejected* — counted, written
to the ``--rejected`` file — and the replay goes on.

Ordering and memory (docs/replay.md has the full story):

- **presorted** (the default for REES46, whose monthly files are sorted by
  ``event_time``): one streaming pass. A reorder buffer puts rows that are at
  most ``--max-lateness`` behind the latest row back in order; a row later
  than that stops the replay with :class:`ReplayError` naming the rerun.
  Memory: the rows of one lateness window, plus the REES46 mapper's current
  session per user (about 180 bytes per distinct user).
- **sorted in memory** (the default for Retailrocket, whose ``events.csv`` is
  not sorted): every row is read first and kept as its CSV text (about
  230 bytes plus the line's length per row: ≈ 0.7 GB for Retailrocket's
  2.76 M rows), sorted by (event time, line), then mapped and sent.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, Protocol, cast

import click
import orjson

from agents.errors import UserpulseError
from agents.settings import Settings
from agents.terminal import ProgressLine, fail
from streams.datasets import (
    LAYOUTS,
    REES46,
    Mapped,
    OrderError,
    Timed,
    check_layout,
    detect_layout,
    in_time_order,
    mapper_for,
    row_time,
    sorted_by_time,
)
from streams.errors import EventError
from streams.events import Limits, parse_event
from streams.state import DEDUP_WINDOW

#: Seconds between progress reports.
PROGRESS_INTERVAL_S = 1.0
#: Seconds between progress lines when stderr is not a terminal (a log file).
#: How far behind the latest row a row of presorted input may be, by default.
DEFAULT_MAX_LATENESS_S = 60.0
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
#: Rejections reported as examples in the report (all go to the rejected file).
EXAMPLE_REJECTIONS = 5

Stage = Literal["map", "validate"]


class ReplayError(UserpulseError):
    """The input cannot be replayed: unreadable, unknown layout, or out of order."""


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay; carries the report of what was done until then."""

    def __init__(self, report: ReplayReport) -> None:
        super().__init__("replay interrupted")
        self.report = report


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that could not be mapped, or one of its events that failed validation."""

    line: int
    stage: Stage
    error: EventError
    row: Mapping[str, str]
    event: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"line": self.line, "stage": self.stage, **self.error.as_dict()}
        doc["row"] = dict(self.row)
        if self.event is not None:
            doc["event"] = self.event
        return orjson.dumps(doc)


class MappedRow(NamedTuple):
    """One input row in event-time order: its events, or why it has none."""

    line: int
    row: Mapping[str, str]
    result: list[Mapped] | EventError


@dataclass
class ReadStats:
    """What reading has done so far; updated while the rows stream by."""

    layout: str = ""
    presorted: bool = True
    rows: int = 0
    phase: str = "reading"
    #: Called every 1024 rows read (progress while a sort reads the whole file).
    tick: Callable[[], None] | None = None


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


# ---------------------------------------------------------------------------
# Reading


@contextmanager
def open_text(path: str | Path) -> Iterator[IO[str]]:
    """``path`` (``-`` = stdin) as text; gzip is recognised by its magic bytes."""
    source = str(path)
    try:
        raw = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    try:
        stream: IO[bytes] = buffered
        if buffered.peek(2)[:2] == b"\x1f\x8b":
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
        # utf-8-sig drops a byte-order mark; newline="" as the csv module wants
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        try:
            yield text
        finally:
            text.detach()  # closing it would close stdin
    finally:
        if source != "-":
            raw.close()


class _Tap:
    """Feeds a csv.reader and keeps the text of the record it is reading."""

    __slots__ = ("_lines", "taken")

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.taken: list[str] = []

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        return line

    def take(self) -> str:
        text = self.taken[0] if len(self.taken) == 1 else "".join(self.taken)
        self.taken.clear()
        return text


def _records(
    text: IO[str], source: str, limit: int | None, stats: ReadStats, *, keep_text: bool
) -> Iterator[tuple[int, list[str], str]]:
    """(line, values, record text if ``keep_text``) for each data row."""
    tap = _Tap(iter(text)) if keep_text else None
    reader = csv.reader(tap if tap is not None else text)
    line = 1
    try:
        for values in reader:
            record = tap.take() if tap is not None else ""
            if not values:
                continue  # a blank line (csv.DictReader skips them too)
            line += 1
            if limit is not None and stats.rows >= limit:
                return
            stats.rows += 1
            if stats.tick is not None and not stats.rows & 1023:
                stats.tick()
            yield line, values, record
    except csv.Error as exc:
        raise ReplayError(f"{source}: line {line + 1} is not CSV: {exc}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ReplayError(f"cannot read {source} after line {line}: {exc}") from None


def mapped_rows(
    path: str | Path,
    layout: str = "auto",
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[MappedRow]:
    """The rows of the dataset at ``path``, in (event time, line) order, mapped.

    ``layout`` is ``auto`` (detected from the header), ``rees46`` or
    ``retailrocket``. ``presorted`` (default: true for REES46) streams the
    file, putting rows up to ``max_lateness_s`` late back in order and
    raising :class:`~streams.datasets.OrderError` at a later one; otherwise
    the whole file is read and sorted in memory. ``limit`` stops after that
    many rows. Rows whose event time cannot be read come first or as they
    are met (they have no place in time).
    """
    stats = stats if stats is not None else ReadStats()
    source = str(path)
    with open_text(path) as text:
        header = _header(text, source)
        resolved = _layout(layout, header, source)
        stats.layout = resolved
        stats.presorted = presorted if presorted is not None else resolved == REES46
        records = _records(text, source, limit, stats, keep_text=not stats.presorted)
        undated: deque[MappedRow] = deque()

        def dated(keep_text: bool) -> Iterator[Timed[Any]]:
            for line, values, record in records:
                row = dict(zip(header, values, strict=False))
                try:
                    ts = row_time(resolved, row)
                except EventError as error:
                    undated.append(MappedRow(line, row, error))
                    continue
                yield Timed(ts, line, record if keep_text else row)

        if stats.presorted:
            lateness_ms = round(max_lateness_s * 1000)
            ordered: Iterator[Timed[Any]] = in_time_order(dated(False), lateness_ms)
        else:
            everything = list(dated(True))
            stats.phase = "sorting"
            if stats.tick is not None:
                stats.tick()
            everything = sorted_by_time(everything)
            ordered = _reparsed(everything, header)
        stats.phase = "replaying"
        mapper = mapper_for(resolved)
        for item in ordered:
            while undated:
                yield undated.popleft()
            row = item.item
            try:
                yield MappedRow(item.line, row, mapper.map(item.line, row))
            except EventError as error:
                yield MappedRow(item.line, row, error)
        while undated:
            yield undated.popleft()


def _header(text: IO[str], source: str) -> list[str]:
    try:
        first = next(csv.reader(text), None)
    except (csv.Error, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ReplayError(f"cannot read the header of {source}: {exc}") from None
    if not first:
        raise ReplayError(f"{source} is empty: expected a CSV header on line 1")
    return [h.strip() for h in first]


def _layout(layout: str, header: list[str], source: str) -> str:
    try:
        if layout == "auto":
            return detect_layout(header)
        check_layout(layout, header)
        return layout
    except EventError as error:
        raise ReplayError(f"{source}: {error.message}") from None


def _reparsed(items: list[Timed[str]], header: list[str]) -> Iterator[Timed[dict[str, str]]]:
    """Sorted record texts back to rows (a record's text is one CSV record)."""
    reader = csv.reader(item.item for item in items)
    for item, values in zip(items, reader, strict=True):
        yield Timed(item.timestamp_ms, item.line, dict(zip(header, values, strict=False)))


# ---------------------------------------------------------------------------
# Sending


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
            from agents.admin import ensure_topics
            from agents.producer import EventProducer

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


# ---------------------------------------------------------------------------
# The command


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ms / 1000))


def summary(report: ReplayReport, rejected_path: str | Path | None = None) -> str:
    """The lines ``userpulse replay`` prints at the end."""
    order = "presorted, streamed" if report.presorted else "sorted in memory"
    sent = "valid (dry run: nothing sent)" if report.dry_run else "sent"
    lines = [
        f"replayed {report.source} ({report.layout}, {order})",
        f"  rows      {report.rows:,}",
        f"  events    {report.events:,} mapped, {report.sent:,} {sent}",
        f"  rejected  {report.rejected:,}"
        + (
            " (" + ", ".join(f"{c} {n:,}" for c, n in sorted(report.rejected_by_code.items())) + ")"
            if report.rejected
            else ""
        ),
        f"  time span {_iso(report.first_event_ms)} … {_iso(report.last_event_ms)}",
        f"  elapsed   {report.elapsed_s:.1f} s, {report.events_per_s:,.0f} events/s",
    ]
    if report.rejected and rejected_path is not None:
        lines.append(f"  rejected rows and events are in {rejected_path}")
    elif report.examples:
        lines.append("  first rejections (keep them all with --rejected FILE):")
        lines += [f"    line {r.line}: {r.error}" for r in report.examples]
    return "\n".join(lines)


@click.command("replay", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--layout",
    type=click.Choice(["auto", *LAYOUTS]),
    default="auto",
    show_default=True,
    help="Dataset layout; auto detects it from the CSV header.",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0),
    default=0.0,
    help="N = N× real time (gaps between event times / N); 0 (default) = as fast as possible.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after N rows.")
@click.option(
    "--rejected",
    "rejected_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write rejected rows and events here as JSON lines (line number, code, message, row).",
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
    help="Seconds a row of presorted input may lag the latest row; later stops the replay.",
)
@click.option("--dry-run", is_flag=True, help="Map and validate only; send nothing.")
def replay_command(
    file: str,
    layout: str,
    speedup: float,
    limit: int | None,
    rejected_path: str | None,
    presorted: bool | None,
    max_lateness_s: float,
    dry_run: bool,
) -> None:
    """Replay a public e-commerce dataset FILE (.csv, .csv.gz, - for stdin) as events.

    Layouts: REES46 "eCommerce behavior data from multi category store" and
    Retailrocket events.csv (docs/replay.md). Events go to user-events in
    event-time order, keyed by user, with deterministic event ids (a second
    replay of the same file is de-duplicated).
    """
    line = ProgressLine(sys.stderr)

    def printer(p: ReplayProgress) -> None:
        line.show(
            f"{p.phase:9} {p.rows:>12,} rows  {p.sent:>12,} sent  {p.rejected:>8,} rejected  "
            f"{p.recent_events_per_s:>9,.0f} events/s  {_clock(p.elapsed_s)}",
            p.elapsed_s,
            p.phase,
        )

    try:
        settings = Settings.from_env()
        report = replay_file(
            settings,
            file,
            layout,
            speedup,
            limit,
            rejected_path,
            printer,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            dry_run=dry_run,
        )
    except ReplayInterrupted as stop:
        line.end()
        click.echo(summary(stop.report, rejected_path))
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        line.end()
        click.echo("interrupted", err=True)
        sys.exit(130)
    except UserpulseError as exc:
        line.end()
        fail(str(exc))
    line.end()
    if report.topics_created:
        click.echo(f"created topics: {', '.join(report.topics_created)}", err=True)
    click.echo(summary(report, rejected_path))


if __name__ == "__main__":  # python -m agents.replay FILE (also: userpulse replay FILE)
    replay_command()
