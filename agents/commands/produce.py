"""`userpulse produce FILE`: publish a JSON Lines file of events.

Each line is validated by the pipeline's own rules
(:func:`streams.events.parse_event`, the check :class:`~agents.kafka.producer.EventProducer`
runs) and, when valid, published to ``user-events`` keyed by its user — the
value is the line's bytes exactly as they are in the file (only the line
terminator, ``\\n`` or ``\\r\\n``, is removed). A rejected line is not sent;
it is written to the rejected file with its line number and the reason.

Exit codes: 0 every line was sent, 1 some lines were rejected (the others
were sent), 2 Kafka or a setting is wrong (nothing or not everything was
delivered; the message says how far it got).

:func:`produce_lines` does the work and is what tests call; the click command
only opens files and prints.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from agents.commands.terminal import fail, friendly_errors
from agents.errors import InfrastructureError, UserpulseError
from agents.kafka.producer import EventProducer
from agents.settings import Settings
from streams.errors import EventError
from streams.events import parse_event

#: How often progress is reported (and sent events are flushed to Kafka), in seconds.
PROGRESS_INTERVAL_S = 1.0

#: How many rejections are also printed on stderr; the rest only go to the file.
SHOWN_REJECTIONS = 5

#: Bootstrap timeout of a command line run, tighter than kafka-python's 30 s
#: so a wrong address ends the run with exit code 2 sooner. Applied only when
#: the installed kafka-python knows the option.
_CLI_PRODUCER_OPTIONS = {"bootstrap_timeout_ms": 10_000}
#: How long a flush (about one second's worth of events) may take before
#: Kafka counts as gone.
_FLUSH_TIMEOUT_S = 30.0


class UndeliveredError(InfrastructureError):
    """Kafka stopped taking or acknowledging events in the middle of a run."""


# ---- the work --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rejection:
    """One input line that is not a valid event."""

    line: int
    error: EventError
    raw: bytes

    def to_json(self) -> bytes:
        """The rejected file's line: ``{"line", "error": {code, path, message}, "input"}``.

        ``input`` is the line as text; bytes that are not UTF-8 appear as
        ``\\xNN`` escapes (the error code is then ``invalid_utf8``).
        """
        return orjson.dumps(
            {
                "line": self.line,
                "error": self.error.as_dict(),
                "input": self.raw.decode("utf-8", errors="backslashreplace"),
            }
        )


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What a run has done so far (progress) or in all (the result)."""

    lines: int = 0
    """Lines read, blank ones included (the last one's number)."""
    blank: int = 0
    """Blank lines, skipped."""
    sent: int = 0
    """Valid events sent (delivered, once the run has returned)."""
    rejected: int = 0
    """Invalid lines, not sent and written to the rejected file."""
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Events checked (sent or rejected) per second."""
        done = self.sent + self.rejected
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every event was sent, 1 when some line was rejected."""
        return 1 if self.rejected else 0

    def summary(self) -> str:
        return f"sent {self.sent}, rejected {self.rejected}"


def produce_lines(
    settings: Settings,
    lines: Iterable[bytes | str],
    rejected_writer: Callable[[Rejection], None],
    progress: Callable[[IngestReport], None] | None = None,
    *,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> IngestReport:
    """Validate each of ``lines`` and send the valid ones to ``user-events``.

    A line is one event as JSON; a trailing ``\\n`` or ``\\r\\n`` is removed,
    every other byte is published as it is, keyed by the event's ``user_id``
    (``anonymous_id`` without one). Blank lines are skipped. Each invalid line
    goes to ``rejected_writer``. About every ``progress_interval_s`` the sent
    events are flushed (so a failure shows early) and ``progress`` is called.

    Returns once every sent event is acknowledged by Kafka. Raises
    :class:`InfrastructureError` when Kafka cannot be reached or does not
    acknowledge; its message says up to which line everything was delivered.
    """
    producer = EventProducer(settings, **_producer_options())
    started = clock()
    lines_read = blank = sent = rejected = 0
    delivered_through = 0  # every valid line up to this one is acknowledged

    def report() -> IngestReport:
        return IngestReport(lines_read, blank, sent, rejected, clock() - started)

    try:
        next_tick = started + progress_interval_s
        for lines_read, line in enumerate(_as_bytes(lines), start=1):
            if not line.strip():
                blank += 1
            else:
                try:
                    now_ms = time.time_ns() // 1_000_000
                    event = parse_event(line, now_ms=now_ms, limits=producer.limits)
                except EventError as error:
                    rejected += 1
                    rejected_writer(Rejection(lines_read, error, line))
                else:
                    _send(producer, event.key.encode(), line, delivered_through)
                    sent += 1
            if clock() >= next_tick:
                _flush(producer, delivered_through)
                delivered_through = lines_read
                if progress is not None:
                    progress(report())
                next_tick = clock() + progress_interval_s
        _flush(producer, delivered_through)
        producer.close()
    except UndeliveredError:
        raise  # waited already; closing would wait for the same records again
    except BaseException:
        with contextlib.suppress(UserpulseError):
            producer.close()  # deliver what was sent before the error
        raise
    return report()


def _as_bytes(lines: Iterable[bytes | str]) -> Iterator[bytes]:
    for line in lines:
        raw = line.encode() if isinstance(line, str) else line
        if raw.endswith(b"\n"):
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        yield raw


def _producer_options() -> dict[str, Any]:
    known = KafkaProducer.DEFAULT_CONFIG
    return {k: v for k, v in _CLI_PRODUCER_OPTIONS.items() if k in known}


def _send(producer: EventProducer, key: bytes, value: bytes, delivered_through: int) -> None:
    try:
        producer.send_raw(key, value)
    except InfrastructureError as exc:
        raise UndeliveredError(f"{exc}{_resume_hint(delivered_through)}") from None


def _flush(producer: EventProducer, delivered_through: int) -> None:
    try:
        producer.flush(timeout_s=_FLUSH_TIMEOUT_S)
    except InfrastructureError as exc:
        raise UndeliveredError(f"{exc}{_resume_hint(delivered_through)}") from None


def _silence_producer_teardown() -> None:
    """Keep kafka-python's teardown quiet after :class:`UndeliveredError`.

    kafka-python (3.0) cannot close a producer whose records are stuck: its
    ``close()`` raises from ``flush()``, and its destructor and exit hook then
    print that ``KafkaTimeoutError`` as a traceback. The run has failed with a
    clear message already, so those are dropped; anything else still reaches
    the previous hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KafkaTimeoutError):
            previous(unraisable)

    sys.unraisablehook = hook


def _resume_hint(delivered_through: int) -> str:
    if delivered_through == 0:
        return " (no line is known to be delivered)"
    return (
        f" (lines 1-{delivered_through} were delivered; "
        f"send the rest again from line {delivered_through + 1})"
    )


# ---- the command -----------------------------------------------------------
class _Console:
    """Progress and notes on stderr: one rewritten line on a terminal,
    periodic lines otherwise."""

    def __init__(self) -> None:
        self.tty = click.get_text_stream("stderr").isatty()
        self._width = 0  # length of the progress line on screen (tty only)

    def progress(self, report: IngestReport) -> None:
        text = (
            f"produce: {report.lines} lines read, {report.sent} sent, "
            f"{report.rejected} rejected, {report.events_per_s:,.0f} events/s"
        )
        if self.tty:
            click.echo("\r" + text.ljust(self._width), nl=False, err=True)
            self._width = len(text)
        else:
            click.echo(text, err=True)

    def note(self, text: str) -> None:
        self.clear()
        click.echo(text, err=True)

    def clear(self) -> None:
        if self._width:
            click.echo("\r" + " " * self._width + "\r", nl=False, err=True)
            self._width = 0


class _RejectedFile:
    """Writes rejections to ``path``, creating (or replacing) it at the first one."""

    def __init__(self, path: Path, console: _Console) -> None:
        self.path = path
        self.console = console
        self.count = 0
        self._file: IO[bytes] | None = None

    def __call__(self, rejection: Rejection) -> None:
        if self._file is None:
            try:
                self._file = self.path.open("wb")
            except OSError as exc:
                raise UserpulseError(
                    f"cannot write the rejected file {self.path}: {exc.strerror or exc}; "
                    "choose another with --rejected PATH"
                ) from None
        self._file.write(rejection.to_json() + b"\n")
        self.count += 1
        if self.count <= SHOWN_REJECTIONS:
            e = rejection.error
            self.console.note(f"line {rejection.line}: {e.code} at {e.path}: {e.message}")
        elif self.count == SHOWN_REJECTIONS + 1:
            self.console.note(f"(more rejections only in {self.path})")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def default_rejected_path(file: str) -> Path:
    """``events.jsonl`` → ``events.rejected.jsonl`` (next to it); stdin → ``rejected.jsonl``."""
    if file == "-":
        return Path("rejected.jsonl")
    path = Path(file)
    if path.suffix in (".jsonl", ".ndjson", ".json", ".txt"):
        return path.with_suffix(".rejected.jsonl")
    return path.with_name(path.name + ".rejected.jsonl")


@click.command("produce", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--rejected",
    "rejected_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where rejected lines go (default: FILE with .rejected.jsonl, e.g. "
    "events.rejected.jsonl; rejected.jsonl for stdin). Written only when a line is rejected.",
)
@friendly_errors
def produce_command(file: str, rejected_path: Path | None) -> None:
    """Validate and publish FILE (JSON Lines, one event per line; - reads stdin).

    Each valid line is sent to user-events as it is, keyed by its user_id
    (or anonymous_id); blank lines are skipped. Invalid lines are not sent:
    each goes to the rejected file as {"line", "error": {code, path,
    message}, "input"}.

    Exit code 0 when every line was sent, 1 when some were rejected (the
    others were sent), 2 when Kafka or a setting is wrong.
    """
    settings = Settings.from_env()
    target = rejected_path or default_rejected_path(file)
    if file != "-" and target.resolve() == Path(file).resolve():
        fail(f"--rejected {target} is the input file itself; choose another path")
    if target.is_dir() or not os.access(target.parent.resolve(), os.W_OK):
        fail(f"cannot write the rejected file {target}; choose another with --rejected PATH")
    console = _Console()
    rejected_file = _RejectedFile(target, console)
    try:
        with click.open_file(file, "rb") as stream:
            report = produce_lines(settings, stream, rejected_file, console.progress)
    except UndeliveredError:
        _silence_producer_teardown()
        raise
    finally:
        console.clear()
        rejected_file.close()
    where = f"; rejected lines are in {target}" if report.rejected else ""
    click.echo(f"{report.summary()}{where}")
    sys.exit(report.exit_code)
