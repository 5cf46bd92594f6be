"""The dead-letter topic: rejected ``user-events`` records, untouched —
original key and value — with the reason and the source position in headers
(:data:`DLQ_HEADERS`; docs/dead-letters.md). A record too big to be sent
again as it is goes *by reference* (:func:`dead_letter_record`): its first
:data:`PREVIEW_BYTES` bytes, its size and where to read it whole.

The worker writes them (:func:`dead_letter_record`); ``userpulse dlq``
(:mod:`agents.commands.dlq`) reads them back. The topic is read from the
beginning up to the end offsets it has when the read starts (and on, with
``follow``). Records carry their broker timestamp, which orders dead letters
across the topic's partitions; that is why this module reads with its own
consumer instead of :func:`agents.kafka.reader.iter_records`, whose records
have no timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agents.errors import InfrastructureError
from agents.kafka.clients import group_free_consumer, unreachable
from agents.kafka.reader import partitions_of
from agents.settings import Settings
from streams import topics
from streams.errors import EventError

#: How long a read waits for the next record before it gives up on reaching
#: the end offsets it saw at the start.
IDLE_TIMEOUT_S = 10.0

#: Header names of a dead letter, in this order (the value is the original record, untouched).
DLQ_HEADERS = (
    "userpulse.error.code",
    "userpulse.error.path",
    "userpulse.error.message",
    "userpulse.source.topic",
    "userpulse.source.partition",
    "userpulse.source.offset",
)
_CODE, _PATH, _MESSAGE, _TOPIC, _PARTITION, _OFFSET = DLQ_HEADERS
#: Headers added to a dead letter by reference: the original value's size in
#: bytes, and ``true`` — the value holds only the original's first bytes (or none).
SIZE_HEADER = "userpulse.source.size"
TRUNCATED_HEADER = "userpulse.value.truncated"

#: How much of an original too big to be dead-lettered whole a dead letter keeps.
PREVIEW_BYTES = 1024

#: ``(key, value, headers)`` of a dead letter
Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

_CONSUMER_OPTIONS = {"bootstrap_timeout_ms": 10_000}


def dead_letter_headers(
    error: EventError, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers of the dead letter of the record at ``topic[partition]@offset``
    that ``error`` rejects."""
    values = (error.code, error.path, error.message, topic, str(partition), str(offset))
    return [(name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)]


def dead_letter_record(
    error: EventError,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    max_bytes: int,
) -> Letter:
    """The dead letter of the record ``key``/``value`` at ``topic[partition]@offset``:
    the original untouched when the record fits in ``max_bytes`` (the
    producer's request limit), else by reference (:func:`by_reference`)."""
    headers = dead_letter_headers(error, topic, partition, offset)
    if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) <= max_bytes:
        return key, value, headers
    return by_reference(error, topic, partition, offset, key, value, keep=PREVIEW_BYTES)


def by_reference(
    error: EventError,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    keep: int = 0,
) -> Letter:
    """A dead letter that names the original instead of carrying it: its
    first ``keep`` bytes (none: no value), its size, the reason and where it
    is (the source topic still holds it, within its retention)."""
    headers = dead_letter_headers(error, topic, partition, offset)
    size = len(value) if value is not None else 0
    headers += [(SIZE_HEADER, str(size).encode()), (TRUNCATED_HEADER, b"true")]
    if key is not None and len(key) > PREVIEW_BYTES:
        key = key[:PREVIEW_BYTES]  # a key that big was rejected with the record (too_large)
    preview = value[:keep] if value is not None and keep > 0 else None
    return key, preview, headers


def dead_letter_sends(
    error: EventError,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    dlq: str,
    max_bytes: int,
) -> tuple[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]], ...]:
    """The dead letter for topic ``dlq`` (:func:`dead_letter_record`), and
    its form by reference without the value, for when that cannot be sent."""
    where = (error, topic, partition, offset, key, value)
    letter = dead_letter_record(*where, max_bytes=max_bytes)
    return (dlq, *letter), (dlq, *by_reference(*where))


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
    truncated: bool = False
    """A dead letter by reference: ``value`` is only the original's first bytes (or none)."""
    source_size: int | None = None
    """The original value's size in bytes (dead letters by reference)."""

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
            code=text(_CODE),
            path=text(_PATH),
            message=text(_MESSAGE),
            source_topic=text(_TOPIC),
            source_partition=number(_PARTITION),
            source_offset=number(_OFFSET),
            truncated=headers.get(TRUNCATED_HEADER) == b"true",
            source_size=number(SIZE_HEADER),
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
            raise unreachable(settings.kafka_bootstrap, exc) from None
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
                raise unreachable(settings.kafka_bootstrap, exc) from None
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


def _consumer(settings: Settings) -> Any:
    known = KafkaConsumer.DEFAULT_CONFIG
    options = {k: v for k, v in _CONSUMER_OPTIONS.items() if k in known}
    return group_free_consumer(settings.kafka_bootstrap, f"{settings.app_id}-dlq-reader", **options)
