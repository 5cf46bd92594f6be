"""`userpulse dlq`: read the dead-letter topic, and export it for re-publishing.

A dead letter (see docs/dead-letters.md) is a rejected ``user-events``
record, untouched, with the reason and the source position in headers
(:mod:`agents.kafka.deadletters` reads them).

- ``userpulse dlq show`` prints them readably, newest last;
- ``userpulse dlq export FILE`` writes their values as JSON Lines, so an
  operator can fix them in an editor and publish them with
  ``userpulse produce FILE``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from agents.commands.terminal import friendly_errors
from agents.errors import UserpulseError
from agents.kafka.deadletters import (
    IDLE_TIMEOUT_S,
    DeadLetter,
    dlq_topic,
    iter_dead_letters,
    read_dead_letters,
)
from agents.settings import Settings

#: Characters of a value ``dlq show`` prints before it cuts the rest.
SHOW_MAX_CHARS = 300


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
    if letter.truncated:
        size = "?" if letter.source_size is None else f"{letter.source_size:,}"
        lines.append(
            f"  by reference: the original ({size} bytes) was too big to dead-letter; "
            f"read it at {letter.source}"
        )
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
    if letter.truncated:
        return f"is only the first bytes of the original (read it whole at {letter.source})"
    if letter.value is None or not letter.value.strip():
        return "has no value"
    if text is None:
        return "is not valid UTF-8"
    if "\n" in text or "\r" in text:
        return "has a line break"
    return ""


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
