"""Reading topics back: for `userpulse tail`, the demo and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from agents.errors import InfrastructureError
from agents.kafka.clients import group_free_consumer


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> Any:
        return orjson.loads(self.value) if self.value is not None else None


def iter_records(
    bootstrap: str,
    topic_names: list[str],
    *,
    from_beginning: bool = True,
    timeout_s: float | None = 30.0,
    idle_timeout_s: float | None = None,
    start: Mapping[tuple[str, int], int] | None = None,
) -> Iterator[Record]:
    """Yield records of ``topic_names`` (all partitions, no consumer group),
    from the beginning (or the end), or from the offsets in ``start``
    ((topic, partition) → offset; a partition not in it from the beginning).

    Stops after ``timeout_s`` in all, or after ``idle_timeout_s`` without a
    new record; ``None`` waits forever (``--follow``).
    """
    consumer = group_free_consumer(bootstrap, "userpulse-reader")
    try:
        parts: list[TopicPartition] = []
        for name in topic_names:
            ids = partitions_of(consumer, name)
            if not ids:
                raise InfrastructureError(
                    f"topic {name!r} does not exist; check the name and USERPULSE_TOPIC_PREFIX"
                )
            parts += [TopicPartition(name, p) for p in sorted(ids)]
        consumer.assign(parts)
        if start is not None:
            for tp in parts:
                consumer.seek(tp, start.get((tp.topic, tp.partition), 0))
        elif from_beginning:
            consumer.seek_to_beginning(*parts)
        else:
            consumer.seek_to_end(*parts)
        started = last = time.monotonic()
        while True:
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                return
            if idle_timeout_s is not None and now - last > idle_timeout_s:
                return
            batches = consumer.poll(timeout_ms=200)
            for batch in batches.values():
                for m in batch:
                    last = time.monotonic()
                    yield Record(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        m.value,
                        {k: v for k, v in (m.headers or [])},
                    )
    finally:
        consumer.close()


def collect(
    bootstrap: str,
    topic_names: list[str],
    until: Callable[[list[Record]], bool],
    *,
    timeout_s: float = 30.0,
    start: Mapping[tuple[str, int], int] | None = None,
) -> list[Record]:
    """Read from the beginning (or ``start``, as :func:`iter_records`) until
    ``until(records)`` holds or the time is up."""
    records: list[Record] = []
    if until(records):
        return records
    for record in iter_records(bootstrap, topic_names, timeout_s=timeout_s, start=start):
        records.append(record)
        if until(records):
            break
    return records


def end_offsets(bootstrap: str, topic_names: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) → the offset the next record will get, for every
    partition of ``topic_names`` that exists: where to read only what comes
    from now on (:func:`collect`'s ``start``)."""
    consumer = group_free_consumer(bootstrap, "userpulse-reader")
    try:
        parts = [
            TopicPartition(name, p)
            for name in topic_names
            for p in sorted(partitions_of(consumer, name) or ())
        ]
        ends = consumer.end_offsets(parts) if parts else {}
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
    finally:
        consumer.close()


def partitions_of(consumer: KafkaConsumer, name: str, wait_s: float = 10.0) -> set[int] | None:
    """The partition ids of topic ``name``; None when it does not exist.
    kafka-python 3 fetches metadata per topic, and a topic created moments
    before can come back without partitions for a while (seen once in a
    fresh clone's `make demo`): ask again, with a full metadata refresh,
    before calling it missing."""
    deadline = time.monotonic() + wait_s
    while True:
        ids = consumer.partitions_for_topic(name)
        if ids:
            return set(ids)
        if time.monotonic() >= deadline:
            return None
        if name not in consumer.topics():  # a refresh of every topic's metadata
            time.sleep(0.2)
