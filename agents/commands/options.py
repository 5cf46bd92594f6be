"""What several commands take on the command line: a time, as ISO-8601 or
epoch milliseconds (``fit --as-of``, ``backtest --until``), printed back the
same way; and how presorted a history FILE is (``replay``, ``backtest``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from agents.files.rows import DEFAULT_MAX_LATENESS_S

F = TypeVar("F", bound=Callable[..., Any])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: str) -> int:
    """Epoch milliseconds, or ISO-8601 (a time without a zone is UTC) — as ms."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither epoch milliseconds nor an ISO-8601 time "
            "(e.g. 1997-10-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def format_time(ms: int) -> str:
    """ISO-8601 in UTC with a Z (milliseconds only when there are some)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = moment.isoformat(timespec="seconds" if ms % 1000 == 0 else "milliseconds")
    return text.replace("+00:00", "Z")


class TimeType(click.ParamType):
    """A click option of :func:`parse_time`."""

    name = "ISO|ms"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def ordering_options(stops: str) -> Callable[[F], F]:
    """``--presorted/--no-presorted`` and ``--max-lateness``, as
    :func:`agents.files.datasets.mapped_rows` takes them; a row later than
    that ``stops`` (the replay, the back-test)."""

    def decorate(command: F) -> F:
        command = click.option(
            "--max-lateness",
            "max_lateness_s",
            type=click.FloatRange(min=0),
            default=DEFAULT_MAX_LATENESS_S,
            show_default=True,
            help=f"Seconds a row of presorted input may lag the latest row; later stops {stops}.",
        )(command)
        return click.option(
            "--presorted/--no-presorted",
            default=None,
            help="Stream input already sorted by event time (default for rees46), or sort it in "
            "memory (default for retailrocket).",
        )(command)

    return decorate
