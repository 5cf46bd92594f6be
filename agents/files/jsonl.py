"""Reading userpulse's own JSON Lines history, for ``userpulse backtest``.

:mod:`agents.files.datasets` reads the public CSV datasets; this module reads the
two JSON Lines files the project itself deals in (docs/replay.md, "Back-testing
JSON Lines"):

- **events** — one event object per line, what ``userpulse produce FILE``
  publishes and ``userpulse dlq export`` writes (docs/events.md);
- **topic records** — an export of the ``user-events`` topic, one record per
  line: ``{"topic", "partition", "offset", "key", "value"}`` with the event as
  ``value`` (an object, or a string holding one). userpulse has no command
  that writes this shape itself (``userpulse tail`` pretty-prints records,
  without their key, over several lines): it is defined here, and
  ``userpulse tail user-events | jq -c .`` or any exporter that writes those
  fields produces it. ``topic`` and ``key`` are optional; other fields
  (headers, timestamps) are ignored.

The first JSON object of a file decides which of the two it is: a record has
a ``value`` or an ``offset`` field, which the event envelope cannot have.

**Order is file order.** Nothing is sorted: the events come out in the order
of the file, as a Kafka partition delivers them to a worker, so a back-test
sees what a worker reading that file as one partition would see — events may
be out of time order across users (and within a user: the state rules take a
late event by event time, docs/ingestion.md). A topic export must list each
partition's records in offset order (gaps are fine); the partitions are
merged in file order, and every record keeps its topic, partition and offset
so a back-test can say where it came from. A record whose offset is not
after the previous one of its partition is rejected (``offset_order``).

:func:`jsonl_rows` has the signature and the yield shape of
:func:`agents.files.datasets.mapped_rows` — ``MappedRow(line, row, result)``, with
``result`` a one-element list of :class:`~streams.datasets.Mapped` (``.doc``
is the event document as ``produce`` would send it, ``.timestamp_ms`` its
event time) or the :class:`~streams.errors.EventError` that rejects the line
— so a consumer of ``mapped_rows`` reads JSON Lines unchanged.
:func:`history_rows` picks between the two readers like ``--layout auto``,
with :func:`detect_jsonl`. What one line is, and why it may be rejected, is
:mod:`agents.files.jsonl_lines`.
"""

from __future__ import annotations

import io
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

from agents.files.datasets import mapped_rows
from agents.files.jsonl_lines import LineReader
from agents.files.opening import GZIP_MAGIC, open_bytes
from agents.files.rows import DEFAULT_MAX_LATENESS_S, MappedRow, ReadStats, ReplayError
from streams.datasets import LAYOUTS

#: The layout name of JSON Lines (``--layout jsonl``); ``stats.layout`` after reading.
JSONL: Final = "jsonl"
#: Every layout ``history_rows`` reads (``auto`` picks one of them).
LAYOUT_CHOICES: Final = (*LAYOUTS, JSONL)
#: Bytes of the input :func:`detect_jsonl` looks at (decompressed, for gzip).
DETECT_BYTES: Final = 64 * 1024

_BOM: Final = b"\xef\xbb\xbf"
_UNREADABLE: Final = (OSError, EOFError, zlib.error)


# ---------------------------------------------------------------------------
# Detecting


def detect_jsonl(path: str | Path) -> bool:
    """Whether the file at ``path`` (``-`` = stdin, plain or gzip) is JSON Lines.

    It is when its first non-blank character is ``{`` (a CSV header never
    starts with one); a byte-order mark is skipped. Only the first
    :data:`DETECT_BYTES` are looked at. stdin is not consumed: a pipe is
    peeked at (what its first read brought, up to the buffer size: when that
    is only blank, the answer is False), seekable input is read and rewound.
    A file that cannot be read is not JSON Lines (the reader then says why).
    """
    if str(path) == "-":
        head = _peek_stdin()
    else:
        try:
            with open(path, "rb") as raw:
                head = raw.read(DETECT_BYTES)
        except OSError:
            return False
    if head[:2] == GZIP_MAGIC:
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, DETECT_BYTES)
        except zlib.error:
            return False
    return head.removeprefix(_BOM).lstrip()[:1] == b"{"


def _peek_stdin() -> bytes:
    try:
        stream: Any = sys.stdin.buffer
        if isinstance(stream, io.BufferedReader):
            return stream.peek(DETECT_BYTES)[:DETECT_BYTES]
        if stream.seekable():
            position = stream.tell()
            try:
                return cast(bytes, stream.read(DETECT_BYTES))
            finally:
                stream.seek(position)
    except (OSError, ValueError, AttributeError):
        pass  # no stdin, or one that cannot be looked at without consuming it
    return b""


# ---------------------------------------------------------------------------
# Reading


def history_rows(
    path: str | Path,
    layout: str = "auto",
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[MappedRow]:
    """:func:`jsonl_rows` or :func:`agents.files.datasets.mapped_rows`, by ``layout``.

    ``layout`` is ``auto`` (JSON Lines when :func:`detect_jsonl` says so,
    otherwise the CSV layout the header has), ``jsonl``, ``rees46`` or
    ``retailrocket``; the other arguments go to the reader as they are.
    """
    if layout == JSONL or (layout == "auto" and detect_jsonl(path)):
        return jsonl_rows(
            path,
            JSONL,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            limit=limit,
            stats=stats,
        )
    return mapped_rows(
        path,
        layout,
        presorted=presorted,
        max_lateness_s=max_lateness_s,
        limit=limit,
        stats=stats,
    )


def jsonl_rows(
    path: str | Path,
    layout: str = JSONL,
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> Iterator[MappedRow]:
    """The lines of the JSON Lines file at ``path``, in file order, as events.

    ``path`` is a file, plain or gzip (recognised by its content), or ``-``
    for stdin. Yields one :class:`~agents.files.rows.MappedRow` per non-blank
    line: ``line`` is its line number in the file (blank lines count, as in
    an editor; they are skipped); ``row`` says where it came from —
    ``{}`` for an event file, ``{"topic", "partition", "offset", "key"}``
    (those present, as text) for a topic record, plus ``"input"``, the
    line's text, when the line is rejected; ``result`` is
    ``[Mapped(timestamp_ms, user_id, doc)]`` or the
    :class:`~streams.errors.EventError` that rejects the line.

    ``doc`` is the event as ``userpulse produce`` would send it; it is not
    validated here — run :func:`~streams.events.parse_event` on it, as for
    the CSV layouts. ``timestamp_ms`` is its event time as ``parse_event``
    reads it (0 when ``parse_event`` would reject the timestamp).

    ``layout`` is ``jsonl`` (or ``auto``); ``presorted`` may be None or
    True — False (sort in memory) is a :class:`~agents.files.rows.ReplayError`,
    because JSON Lines are read in file order; ``max_lateness_s`` does not
    apply. ``limit`` stops after that many non-blank lines. ``stats`` gets
    ``layout="jsonl"``, ``presorted=True`` and the count of lines read.

    Raises :class:`~agents.files.rows.ReplayError` when the file cannot be read,
    is empty, or its first non-blank line is not a JSON object (it is not
    JSON Lines — a CSV file, say).
    """
    del max_lateness_s  # nothing is reordered
    if layout not in ("auto", JSONL):
        raise ReplayError(f"jsonl_rows reads JSON Lines, not the {layout} layout")
    if presorted is False:
        raise ReplayError(
            "--no-presorted does not apply to JSON Lines: their events are read in file "
            "order, as a Kafka partition delivers them"
        )
    stats = stats if stats is not None else ReadStats()
    stats.layout = JSONL
    stats.presorted = True
    stats.phase = "replaying"
    source = str(path)
    lines = LineReader()
    number = taken = 0
    with open_bytes(path) as stream:
        try:
            for number, raw in enumerate(stream, start=1):
                raw = raw.removesuffix(b"\n").removesuffix(b"\r")
                if number == 1:
                    raw = raw.removeprefix(_BOM)
                if not raw.strip():
                    continue
                if not taken:
                    _check_first(raw, number, source)
                if limit is not None and taken >= limit:
                    return
                taken += 1
                stats.rows += 1
                if stats.tick is not None and not stats.rows & 1023:
                    stats.tick()
                yield lines.read(number, raw)
        except _UNREADABLE as exc:
            raise ReplayError(f"cannot read {source} after line {number}: {exc}") from None
    if not taken:
        raise ReplayError(
            f"{source} is empty: expected JSON Lines, one event or topic record per line"
        )


def _check_first(raw: bytes, number: int, source: str) -> None:
    if raw.lstrip()[:1] != b"{":
        shown = raw[:60].decode("utf-8", errors="replace")
        raise ReplayError(
            f"{source}: line {number} is not a JSON object ({shown!r}), so the file is not "
            "JSON Lines of events or topic records; for a CSV dataset use --layout auto, "
            "rees46 or retailrocket"
        )
