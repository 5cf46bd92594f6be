"""Reading userpulse's own JSON Lines history, for ``userpulse backtest``.

:mod:`agents.replay` reads the public CSV datasets; this module reads the
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
:func:`agents.replay.mapped_rows` — ``MappedRow(line, row, result)``, with
``result`` a one-element list of :class:`~streams.datasets.Mapped` (``.doc``
is the event document as ``produce`` would send it, ``.timestamp_ms`` its
event time) or the :class:`~streams.errors.EventError` that rejects the line
— so a consumer of ``mapped_rows`` reads JSON Lines unchanged.
:func:`history_rows` picks between the two readers like ``--layout auto``,
with :func:`detect_jsonl`.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, cast

import orjson

from agents.replay import DEFAULT_MAX_LATENESS_S, MappedRow, ReadStats, ReplayError, mapped_rows
from streams.datasets import LAYOUTS, Mapped
from streams.errors import EventError
from streams.events import parse_event

#: The layout name of JSON Lines (``--layout jsonl``); ``stats.layout`` after reading.
JSONL: Final = "jsonl"
#: Every layout ``history_rows`` reads (``auto`` picks one of them).
LAYOUT_CHOICES: Final = (*LAYOUTS, JSONL)
#: The fields of a topic record; ``value``, ``partition`` and ``offset`` are required.
RECORD_FIELDS: Final = ("topic", "partition", "offset", "key", "value")
#: Codes a line can get from reading, beyond the contract's own (``not_json``,
#: ``not_object``, ``invalid_utf8``, ``too_large``, ``missing_field``,
#: ``wrong_type``) and the worker's ``key_mismatch``.
READING_CODES: Final = {
    "offset_order": "a topic record's offset is not after the previous one of its partition",
}
#: Bytes of the input :func:`detect_jsonl` looks at (decompressed, for gzip).
DETECT_BYTES: Final = 64 * 1024

_GZIP_MAGIC: Final = b"\x1f\x8b"
_BOM: Final = b"\xef\xbb\xbf"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
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
    if head[:2] == _GZIP_MAGIC:
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
    """:func:`jsonl_rows` or :func:`agents.replay.mapped_rows`, by ``layout``.

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
    for stdin. Yields one :class:`~agents.replay.MappedRow` per non-blank
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
    True — False (sort in memory) is a :class:`~agents.replay.ReplayError`,
    because JSON Lines are read in file order; ``max_lateness_s`` does not
    apply. ``limit`` stops after that many non-blank lines. ``stats`` gets
    ``layout="jsonl"``, ``presorted=True`` and the count of lines read.

    Raises :class:`~agents.replay.ReplayError` when the file cannot be read,
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
    lines = _Lines()
    number = taken = 0
    with _open_bytes(path) as stream:
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


@contextmanager
def _open_bytes(path: str | Path) -> Iterator[IO[bytes]]:
    """``path`` (``-`` = stdin) as bytes; gzip is recognised by its magic bytes."""
    source = str(path)
    try:
        raw: Any = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
    wrapped = not isinstance(raw, io.BufferedReader)
    buffered: io.BufferedReader = io.BufferedReader(raw) if wrapped else raw
    try:
        try:
            gzipped = buffered.peek(2)[:2] == _GZIP_MAGIC
        except OSError as exc:
            raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
        if gzipped:
            # closing a GzipFile leaves the file object it was given open
            with gzip.GzipFile(fileobj=buffered, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped)
        else:
            yield buffered
    finally:
        if source != "-":
            raw.close()
        elif wrapped:
            buffered.detach()  # closing the wrapper would close stdin


class _Lines:
    """Turns lines into MappedRows; remembers the file's kind and each partition's offset."""

    def __init__(self) -> None:
        #: None until the first JSON object says whether this is a topic export.
        self.records: bool | None = None
        #: (topic, partition) → (offset, line) of its latest record.
        self.positions: dict[tuple[str | None, int], tuple[int, int]] = {}

    def read(self, number: int, raw: bytes) -> MappedRow:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is not dict:
            return _rejected(number, {}, raw, _line_error(raw))
        if self.records is None:
            self.records = "value" in doc or "offset" in doc
        if self.records:
            return self._record(number, raw, doc)
        if "value" in doc or "offset" in doc:
            name = "value" if "value" in doc else "offset"
            return _rejected(
                number,
                {},
                raw,
                EventError(
                    "unknown_field",
                    f"$.{name}",
                    "this line is a topic record, but the file is one of events (its first "
                    "object is an event): export the topic whole, or list events only",
                ),
            )
        return MappedRow(number, {}, [_mapped(doc)])

    def _record(self, number: int, raw: bytes, record: dict[str, Any]) -> MappedRow:
        row: dict[str, str] = {}
        try:
            if "value" not in record and ("event_id" in record or "type" in record):
                raise EventError(
                    "missing_field",
                    "$.value",
                    "this line is an event, but the file is a topic export (its first object "
                    "is a record): every line must be a record with the event as its value",
                )
            topic = record.get("topic")
            if topic is not None:
                if type(topic) is not str:
                    raise _wrong_type("topic", "a string", topic)
                row["topic"] = topic
            partition = _position(record, "partition")
            row["partition"] = str(partition)
            offset = _position(record, "offset")
            row["offset"] = str(offset)
            has_key = "key" in record
            key = record.get("key")
            if key is not None:
                if type(key) is not str:
                    raise _wrong_type("key", "a string (the record key as text) or null", key)
                row["key"] = key
            self._check_order(topic, partition, offset, number)
            doc = _value(record)
            mapped = _mapped(doc)
            if has_key:
                _check_key(key, mapped)
        except EventError as error:
            return _rejected(number, row, raw, error)
        return MappedRow(number, row, [mapped])

    def _check_order(self, topic: str | None, partition: int, offset: int, number: int) -> None:
        where = (topic, partition)
        previous = self.positions.get(where)
        if previous is not None and offset <= previous[0]:
            before, line = previous
            named = f"partition {partition}" + (f" of {topic}" if topic is not None else "")
            what = "repeats" if offset == before else "comes after"
            raise EventError(
                "offset_order",
                "$.offset",
                f"offset {offset} of {named} {what} offset {before} (line {line}): a topic "
                "export lists each partition's records once, in offset order",
            )
        self.positions[where] = (offset, number)


def _position(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if value is None:
        raise EventError(
            "missing_field",
            f"$.{name}",
            f"a topic record needs {name}: the record's {name} number in the topic",
        )
    if type(value) is not int or value < 0:
        raise _wrong_type(name, "a whole number ≥ 0", value)
    return value


def _value(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("value")
    if value is None:
        problem = "its value is null (a tombstone)" if "value" in record else "it has no value"
        raise EventError(
            "missing_field", "$.value", f"a topic record needs value, the event: {problem}"
        )
    if type(value) is str:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EventError(
                "not_json", "$.value", f"value is a string that is not JSON: {exc}"
            ) from None
    if type(value) is not dict:
        raise EventError(
            "not_object",
            "$.value",
            f"value must be the event, a JSON object (or a string holding one), got {_kind(value)}",
        )
    return cast(dict[str, Any], value)


def _check_key(key: str | None, mapped: Mapped) -> None:
    """A record key that is not the event's user is rejected, as the worker does
    (agents/pipeline.py) — once the event is valid: the worker checks the key
    after parsing, so an invalid event keeps its own rejection."""
    if key == mapped.user_id:
        return
    try:
        event = parse_event(orjson.dumps(mapped.doc), now_ms=mapped.timestamp_ms + 1)
    except EventError:
        return  # validation rejects it with its own code
    if key != event.key:
        raise EventError(
            "key_mismatch",
            "$.user_id",
            f"record key {key!r} must equal the user_id (or anonymous_id) {event.key!r}",
        )


def _mapped(doc: dict[str, Any]) -> Mapped:
    user = doc.get("user_id") or doc.get("anonymous_id")
    return Mapped(_event_time(doc.get("timestamp")), user if type(user) is str else "", doc)


def _event_time(value: Any) -> int:
    """The event time ``parse_event`` reads from ``timestamp``; 0 where it would
    reject the timestamp (the event then fails validation anyway)."""
    if type(value) is int:
        return value
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return 0
        if parsed.tzinfo is not None:
            return (parsed - _EPOCH) // _ONE_MS
    return 0


def _line_error(raw: bytes) -> EventError:
    """Why a line that is not a JSON object is rejected: the error ``userpulse
    produce`` gives it (``invalid_utf8``, ``not_json``, ``not_object``, ``too_large``)."""
    try:
        parse_event(raw, now_ms=0)
    except EventError as error:
        return error
    return EventError("not_object", "$", "expected a JSON object")  # not reached


def _rejected(number: int, row: dict[str, str], raw: bytes, error: EventError) -> MappedRow:
    row["input"] = raw.decode("utf-8", errors="backslashreplace")
    return MappedRow(number, row, error)


def _wrong_type(name: str, expected: str, value: Any) -> EventError:
    shown = orjson.dumps(value).decode()
    if len(shown) > 40:
        shown = shown[:39] + "…"
    return EventError(
        "wrong_type", f"$.{name}", f"{name} must be {expected}, got {_kind(value)} {shown}"
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"
