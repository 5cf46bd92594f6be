"""What reading a history file gives and what a run over one rejects.

A reader (:func:`agents.files.datasets.mapped_rows`,
:func:`agents.files.jsonl.jsonl_rows`) yields a :class:`MappedRow` per input
row — its events, or why it has none — in the order the run takes them, and
keeps its :class:`ReadStats` up to date; it raises :class:`ReplayError` for
a file it cannot read. A run (``userpulse replay``, ``userpulse backtest``)
counts what it rejects — a row that does not map, an event that fails
validation — as :class:`Rejection`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from agents.errors import UserpulseError
from streams.datasets import Mapped
from streams.errors import EventError

#: Seconds between progress reports of a run.
PROGRESS_INTERVAL_S = 1.0
#: How far behind the latest row a row of presorted input may be, by default.
DEFAULT_MAX_LATENESS_S = 60.0
#: Rejections a run's report keeps as examples.
EXAMPLE_REJECTIONS = 5

Stage = Literal["map", "validate"]


class ReplayError(UserpulseError):
    """The input cannot be replayed: unreadable, unknown layout, or out of order."""


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
