"""`userpulse dlq`: read the dead-letter topic, and export it for re-publishing.

A dead letter (see docs/dead-letters.md) is a rejected ``user-events``
record, untouched — original key and value — with the reason and the source
position in headers (:data:`agents.pipeline.DLQ_HEADERS`).

- ``userpulse dlq show`` prints them readably, newest last;
- ``userpulse dlq export FILE`` writes their values as JSON Lines, so an
  operator can fix them in an editor and publish them with
  ``userpulse produce FILE``.

The topic is read from the beginning up to the end offsets it has when the
command starts (and on, with ``--follow``). Records carry their broker
timestamp, which orders dead letters across the topic's partitions; that is
why this module reads with its own consumer instead of
:func:`agents.reader.iter_records`, whose records have no timestamp.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agents.errors import InfrastructureError, UserpulseError
from agents.reader import partitions_of
from agents.settings import Settings
from agents.terminal import friendly_errors
from streams import topics

#: Characters of a value ``dlq show`` prints before it cuts the rest.
SHOW_MAX_CHARS = 300

#: How long a read waits for the next record before it gives up on reaching
#: the end offsets it saw at the start.
IDLE_TIMEOUT_S = 10.0

_CONSUMER_OPTIONS = {"bootstrap_timeout_ms": 10_000}

_HEADER_CODE = "userpulse.error.code"
_HEADER_PATH = "userpulse.error.path"
_HEADER_MESSAGE = "userpulse.error.message"
_HEADER_TOPIC = "userpulse.source.topic"
_HEADER_PARTITION = "userpulse.source.partition"
_HEADER_OFFSET = "userpulse.source.offset"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, its headers decoded."""

    partition: int
    """Partition of the dead-letter topic."""
    offset: int
    """Offset in that partition."""
    timestamp_ms: int
    """When it was dead-lettered (the record's timestamp)."""
    key: bytes | None
    """The original record's key."""
    value: bytes | None
    """The original record's value, untouched."""
    code: str
    path: str
    message: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None

    @classmethod
    def from_record(
        cls,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, bytes],
    ) -> DeadLetter:
        """A dead letter from a record; missing headers read as ``?`` / ``None``."""

        def text(name: str) -> str:
            raw = headers.get(name)
            return raw.decode("utf-8", errors="replace") if raw is not None else "?"

        def number(name: str) -> int | None:
            try:
                return int(headers[name])
            except (KeyError, ValueError):
                return None

        return cls(
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            key=key,
            value=value,
            code=text(_HEADER_CODE),
            path=text(_HEADER_PATH),
            message=text(_HEADER_MESSAGE),
            source_topic=text(_HEADER_TOPIC),
            source_partition=number(_HEADER_PARTITION),
            source_offset=number(_HEADER_OFFSET),
        )

    @property
    def source(self) -> str:
        """Where the record was rejected: ``user-events[3]@18211``."""
        part = "?" if self.source_partition is None else str(self.source_partition)
        offset = "?" if self.source_offset is None else str(self.source_offset)
        return f"{self.source_topic}[{part}]@{offset}"

    def text(self) -> str | None:
        """The value as text, or ``None`` when it is absent or not valid UTF-8."""
        if self.value is None:
            return None
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Marks the end of what the topic held when the read started.

    ``complete`` is false when the read stopped waiting for records it knew
    of (no record for :data:`IDLE_TIMEOUT_S`): what came before may be partial.
    """

    complete: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The dead letters on the topic when the read started, newest last."""

    topic: str
    letters: list[DeadLetter]
    complete: bool


def dlq_topic(settings: Settings) -> str:
    return settings.topic(topics.DEAD_LETTERS)


def iter_dead_letters(
    settings: Settings, *, follow: bool = False, idle_timeout_s: float = IDLE_TIMEOUT_S
) -> Iterator[DeadLetter | CaughtUp]:
    """Yield the dead letters from the beginning, then one :class:`CaughtUp`
    when the end offsets seen at the start are reached; with ``follow``,
    then every new dead letter as it comes, forever.

    Before :class:`CaughtUp`, records come partition by partition (not in
    time order); sort them by ``timestamp_ms`` to see them as they happened.
    """
    name = dlq_topic(settings)
    consumer = _consumer(settings)
    try:
        try:
            ids = partitions_of(consumer, name)
            if not ids:
                raise InfrastructureError(
                    f"topic {name!r} does not exist; check USERPULSE_TOPIC_PREFIX, "
                    "or create it with `userpulse topics`"
                )
            parts = [TopicPartition(name, p) for p in sorted(ids)]
            consumer.assign(parts)
            ends: dict[TopicPartition, int] = consumer.end_offsets(parts)
            starts: dict[TopicPartition, int] = consumer.beginning_offsets(parts)
            consumer.seek_to_beginning(*parts)
        except KafkaError as exc:
            raise _unreachable(settings, exc) from None
        pending = {tp for tp in parts if ends[tp] > starts[tp]}
        caught_up = False
        last = time.monotonic()
        while True:
            if not caught_up:
                pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
                stalled = time.monotonic() - last > idle_timeout_s
                if not pending or stalled:
                    caught_up = True
                    yield CaughtUp(complete=not pending)
                    if not follow:
                        return
            try:
                batches = consumer.poll(timeout_ms=200)
            except KafkaError as exc:
                raise _unreachable(settings, exc) from None
            for tp, batch in batches.items():
                for m in batch:
                    last = time.monotonic()
                    yield DeadLetter.from_record(
                        tp.partition, m.offset, m.timestamp, m.key, m.value, dict(m.headers or [])
                    )
    finally:
        consumer.close()


def read_dead_letters(settings: Settings, *, idle_timeout_s: float = IDLE_TIMEOUT_S) -> Snapshot:
    """Every dead letter on the topic now, oldest first."""
    letters: list[DeadLetter] = []
    complete = True
    for item in iter_dead_letters(settings, idle_timeout_s=idle_timeout_s):
        if isinstance(item, CaughtUp):
            complete = item.complete
        else:
            letters.append(item)
    letters.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
    return Snapshot(dlq_topic(settings), letters, complete)


def format_dead_letter(letter: DeadLetter, *, max_chars: int = SHOW_MAX_CHARS) -> str:
    """A readable block: source position, error, key and original value.

    Control characters are shown escaped (``\\n``, ``\\x1b`` …) so a hostile
    record cannot drive the terminal; a long value is cut at ``max_chars``.
    """
    when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    lines = [
        f"{letter.source}  (dead-lettered {when}Z, dlq [{letter.partition}]@{letter.offset})",
        f"  error  {_escape(letter.code)} at {_escape(letter.path)}: {_escape(letter.message)}",
        f"  key    {_show_bytes(letter.key)}",
    ]
    value = letter.value
    if value is None:
        lines.append("  value  (none)")
    else:
        text = letter.text()
        note = ""
        if text is None:
            text = value.decode("utf-8", errors="backslashreplace")
            note = f"  [not valid UTF-8 ({len(value)} bytes): undecodable bytes shown as \\xNN]"
        if len(text) > max_chars:
            note += (
                f"  [cut: {max_chars} of {len(text)} characters shown; "
                "`userpulse dlq export` writes it whole]"
            )
            text = text[:max_chars] + "…"
        lines.append(f"  value  {_escape(text)}{note}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ExportReport:
    path: Path
    exported: list[DeadLetter]
    """In file order: line n of the file is ``exported[n - 1]``."""
    skipped: list[tuple[DeadLetter, str]]
    """Dead letters left out, with the reason."""
    complete: bool


def export_dead_letters(
    settings: Settings,
    path: Path,
    *,
    codes: Iterable[str] = (),
    overwrite: bool = False,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> ExportReport:
    """Write the dead letters' original values to ``path``, one per line, oldest first.

    Only letters whose code is in ``codes`` (all when empty). A value is
    written exactly as it is; one that is absent or blank, not valid UTF-8,
    or has a line break cannot be a line of the file and is skipped (with the
    reason in the report).
    """
    if path.exists() and not overwrite:
        raise UserpulseError(f"{path} exists; choose another file or pass --force to replace it")
    wanted = set(codes)
    snapshot = read_dead_letters(settings, idle_timeout_s=idle_timeout_s)
    exported: list[DeadLetter] = []
    skipped: list[tuple[DeadLetter, str]] = []
    out: list[bytes] = []
    for letter in snapshot.letters:
        if wanted and letter.code not in wanted:
            continue
        reason = _unexportable(letter)
        if reason:
            skipped.append((letter, reason))
        else:
            exported.append(letter)
            out.append((letter.value or b"") + b"\n")
    try:
        path.write_bytes(b"".join(out))
    except OSError as exc:
        raise UserpulseError(f"cannot write {path}: {exc.strerror or exc}") from None
    return ExportReport(path, exported, skipped, snapshot.complete)


def _unexportable(letter: DeadLetter) -> str:
    text = letter.text()
    if letter.value is None or not letter.value.strip():
        return "has no value"
    if text is None:
        return "is not valid UTF-8"
    if "\n" in text or "\r" in text:
        return "has a line break"
    return ""


def _consumer(settings: Settings) -> Any:
    options: dict[str, Any] = {
        k: v for k, v in _CONSUMER_OPTIONS.items() if k in KafkaConsumer.DEFAULT_CONFIG
    }
    try:
        return KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.app_id}-dlq-reader",
            **options,
        )
    except (KafkaError, OSError) as exc:
        raise _unreachable(settings, exc) from None


def _unreachable(settings: Settings, exc: BaseException) -> InfrastructureError:
    return InfrastructureError(
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.__class__.__name__}). "
        "Start it (userpulse stack up) or set USERPULSE_KAFKA_BOOTSTRAP"
    )


def _show_bytes(raw: bytes | None) -> str:
    if raw is None:
        return "(none)"
    return _escape(raw.decode("utf-8", errors="backslashreplace"))


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str) -> str:
    """``text`` with control, format and line-separator characters escaped."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


# ---- the commands ----------------------------------------------------------
@click.group("dlq", context_settings={"help_option_names": ["-h", "--help"]})
def dlq_group() -> None:
    """Dead letters: rejected user-events records with the reason (show, export)."""


@dlq_group.command("show")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show the last N dead letters (0: all).",
)
@click.option("--follow", "-f", is_flag=True, help="Then keep printing new ones (Ctrl-C stops).")
@friendly_errors
def dlq_show(limit: int, follow: bool) -> None:
    """Print recent dead letters, newest last.

    For each: where it was rejected (topic[partition]@offset), the error code,
    path and message, its key and its original value.
    """
    settings = Settings.from_env()
    show_dead_letters(settings, limit=limit, follow=follow, echo=click.echo)


def show_dead_letters(
    settings: Settings,
    *,
    limit: int = 20,
    follow: bool = False,
    echo: Callable[..., Any] = click.echo,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> int:
    """What ``dlq show`` does; returns how many dead letters were printed."""
    name = dlq_topic(settings)
    backlog: list[DeadLetter] = []
    live = False  # past the end the topic had at the start: print as they come
    printed = 0
    for item in iter_dead_letters(settings, follow=follow, idle_timeout_s=idle_timeout_s):
        if isinstance(item, DeadLetter):
            if live:
                echo(format_dead_letter(item) + "\n")
                printed += 1
            else:
                backlog.append(item)
            continue
        backlog.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
        shown = backlog[-limit:] if limit else backlog
        for letter in shown:
            echo(format_dead_letter(letter) + "\n")
        printed += len(shown)
        if not item.complete:
            echo(
                f"warning: stopped waiting for {name} after {idle_timeout_s:.0f} s "
                "without a record; older dead letters may be missing",
                err=True,
            )
        if not backlog:
            echo(f"no dead letters on {name}", err=True)
        elif len(shown) < len(backlog):
            echo(
                f"the last {len(shown)} of {len(backlog)} dead letters on {name} "
                "(--limit 0 shows all)",
                err=True,
            )
        else:
            echo(f"{len(backlog)} dead letters on {name}", err=True)
        if follow:
            echo("following; Ctrl-C stops", err=True)
        live = True
    return printed


@dlq_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--code",
    "codes",
    multiple=True,
    metavar="CODE",
    help="Only dead letters with this error code (repeat for several), e.g. bad_timestamp.",
)
@click.option("--force", is_flag=True, help="Replace FILE when it exists.")
@friendly_errors
def dlq_export(file: Path, codes: tuple[str, ...], force: bool) -> None:
    """Write dead letters' values to FILE, to fix and re-publish.

    FILE gets each dead letter's original value, one per line (JSON Lines),
    oldest first. Fix the lines in an editor, then publish them with `userpulse produce FILE`:
    each keeps its event_id, so it is applied once. For each line of FILE
    this prints where it was rejected and why. Values that cannot be one
    line (not UTF-8, a line break, empty) are skipped with a warning.
    """
    settings = Settings.from_env()
    report = export_dead_letters(settings, file, codes=codes, overwrite=force)
    for number, letter in enumerate(report.exported, start=1):
        click.echo(
            f"line {number}: {letter.source} {_escape(letter.code)} at "
            f"{_escape(letter.path)}: {_escape(letter.message)}"
        )
    for letter, reason in report.skipped:
        click.echo(
            f"warning: skipped {letter.source} ({_escape(letter.code)}): its value {reason}; "
            "see it with `userpulse dlq show`",
            err=True,
        )
    if not report.complete:
        click.echo(
            "warning: stopped waiting for the dead-letter topic; older dead letters may be missing",
            err=True,
        )
    skipped = f", skipped {len(report.skipped)}" if report.skipped else ""
    click.echo(f"exported {len(report.exported)} dead letters to {file}{skipped}", err=True)
    if report.exported:
        click.echo(f"fix them, then publish them: userpulse produce {file}", err=True)
