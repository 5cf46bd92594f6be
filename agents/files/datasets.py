"""Reading the public CSV datasets (REES46, Retailrocket) as rows in
event-time order, each mapped to events by :mod:`streams.datasets`.

Ordering and memory (docs/replay.md has the full story):

- **presorted** (the default for REES46, whose monthly files are sorted by
  ``event_time``): one streaming pass. A reorder buffer puts rows that are at
  most ``max_lateness_s`` behind the latest row back in order; a row later
  than that raises :class:`~streams.datasets.OrderError`. Memory: the rows
  of one lateness window, plus the REES46 mapper's current session per user
  (about 180 bytes per distinct user).
- **sorted in memory** (the default for Retailrocket, whose ``events.csv`` is
  not sorted): every row is read first and kept as its CSV text (about
  230 bytes plus the line's length per row: ≈ 0.7 GB for Retailrocket's
  2.76 M rows), sorted by (event time, line), then mapped.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agents.files.opening import open_text
from agents.files.rows import DEFAULT_MAX_LATENESS_S, MappedRow, ReadStats, ReplayError
from streams.datasets import (
    REES46,
    Timed,
    check_layout,
    detect_layout,
    in_time_order,
    mapper_for,
    row_time,
    sorted_by_time,
)
from streams.errors import EventError


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
