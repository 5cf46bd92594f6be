"""What every command shares on the terminal: one clear error line with exit
code 2, and a progress line (rewritten in place on a terminal, periodic
lines in a log)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import IO, Any, NoReturn, TypeVar

import click

from agents.errors import StackError, UserpulseError

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_LOG_INTERVAL_S = 5.0


def fail(message: str, detail: str = "") -> NoReturn:
    """Print ``userpulse: error: message`` (and a log tail) on stderr; exit 2."""
    click.secho(f"userpulse: error: {message}", fg="red", err=True)
    if detail:
        click.echo("---- last lines of the log ----", err=True)
        click.echo(detail, err=True)
    sys.exit(2)


def friendly_errors(fn: F) -> F:
    """Turn our errors into one clear line and exit code 2 (no traceback wall)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StackError as exc:
            fail(str(exc), exc.log_tail)
        except UserpulseError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class ProgressLine:
    """Progress on a stream: one rewritten line on a terminal; otherwise a
    line every :data:`PROGRESS_LOG_INTERVAL_S` and on every change of phase."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = 0
        self.last_line = -PROGRESS_LOG_INTERVAL_S
        self.last_phase = ""

    def show(self, text: str, elapsed_s: float, phase: str = "") -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        elif elapsed_s - self.last_line >= PROGRESS_LOG_INTERVAL_S or phase != self.last_phase:
            self.stream.write(text + "\n")
            self.last_line, self.last_phase = elapsed_s, phase
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0
