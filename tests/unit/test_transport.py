"""The worker's consumer thread (agents/worker/transport.py) hands Faust only
records of partitions Faust keeps, and seeks the others back — with fakes
for aiokafka's consumer and Faust's."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from agents.worker.transport import SCHEME, ConsumerThread, Transport, broker_urls

A, B, C = TP("events", 0), TP("events", 1), TP("events", 2)


class Fetcher:
    """aiokafka's fetcher: hands over what it holds for the partitions asked
    (all of them when asked for none, as aiokafka does)."""

    _closed = False

    def __init__(self, held: dict[TP, list[int]], on_fetch: Any = None) -> None:
        self.held = held
        self.asked: list[frozenset[TP]] = []
        self.on_fetch = on_fetch
        self._subscriptions = SimpleNamespace(fetch_context=contextmanager(lambda: (yield)))

    async def fetched_records(self, partitions: Any, timeout: Any = None, max_records: Any = None):
        self.asked.append(frozenset(partitions))
        if self.on_fetch is not None:
            self.on_fetch()  # the main thread changes the active set meanwhile
        return {
            tp: [SimpleNamespace(offset=o) for o in offsets]
            for tp, offsets in self.held.items()
            if not partitions or tp in partitions
        }


class AioConsumer:
    _closed = False

    def __init__(self, fetcher: Fetcher, assigned: set[TP]) -> None:
        self._fetcher = fetcher
        self.assigned = assigned
        self.seeks: list[tuple[TP, int]] = []

    def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.assigned:
            raise IllegalStateError("not assigned")
        self.seeks.append((tp, offset))


def fetch(active: set[TP], held: dict[TP, list[int]], *, on_fetch: Any = None, assigned=None):
    faust_consumer = SimpleNamespace(
        flow_active=True, _active_partitions=active, _buffered_partitions=set()
    )
    fetcher = Fetcher(held, on_fetch)
    consumer = AioConsumer(fetcher, assigned if assigned is not None else {A, B, C})
    thread = SimpleNamespace(consumer=faust_consumer)
    records = asyncio.run(ConsumerThread._fetch_records(thread, consumer, active, timeout=1.0))  # type: ignore[arg-type]
    return (
        {tp: [r.offset for r in rs] for tp, rs in records.items()},
        consumer,
        fetcher,
        faust_consumer,
    )


def test_an_empty_active_set_fetches_nothing() -> None:
    records, consumer, fetcher, _ = fetch(set(), {A: [5, 6], B: [9]})
    assert records == {}
    assert fetcher.asked == []  # aiokafka was not asked (it would return every partition)
    assert consumer.seeks == []


def test_records_of_active_partitions_are_handed_over() -> None:
    records, consumer, fetcher, _ = fetch({A, B}, {A: [5, 6], B: [9], C: [1]})
    assert records == {A: [5, 6], B: [9]}
    assert fetcher.asked == [frozenset({A, B})]
    assert consumer.seeks == []


def test_a_partition_paused_during_the_fetch_is_sought_back_to_its_first_record() -> None:
    active = {A, B}
    records, consumer, _, _ = fetch(
        active, {A: [5, 6], B: [9, 10]}, on_fetch=lambda: active.discard(B)
    )
    assert records == {A: [5, 6]}
    assert consumer.seeks == [(B, 9)]


def test_a_buffered_partition_keeps_its_records() -> None:
    # Faust moves a partition whose stream buffer is full from active to buffered
    active = {A, B}
    faust_consumer = SimpleNamespace(
        flow_active=True, _active_partitions=active, _buffered_partitions={B}
    )
    fetcher = Fetcher({A: [1], B: [2]}, on_fetch=lambda: active.discard(B))
    consumer = AioConsumer(fetcher, {A, B})
    thread = SimpleNamespace(consumer=faust_consumer)
    records = asyncio.run(ConsumerThread._fetch_records(thread, consumer, active))  # type: ignore[arg-type]
    assert {tp: [r.offset for r in rs] for tp, rs in records.items()} == {A: [1], B: [2]}
    assert consumer.seeks == []


def test_a_partition_no_longer_assigned_is_dropped_without_a_seek() -> None:
    active = {A, B}
    records, consumer, _, _ = fetch(
        active, {A: [5], B: [9]}, on_fetch=lambda: active.discard(B), assigned={A}
    )
    assert records == {A: [5]}
    assert consumer.seeks == []


def test_a_stopped_flow_fetches_nothing() -> None:
    faust_consumer = SimpleNamespace(
        flow_active=False, _active_partitions={A}, _buffered_partitions=set()
    )
    fetcher = Fetcher({A: [1]})
    thread = SimpleNamespace(consumer=faust_consumer)
    records = asyncio.run(ConsumerThread._fetch_records(thread, AioConsumer(fetcher, {A}), {A}))  # type: ignore[arg-type]
    assert records == {} and fetcher.asked == []


def test_the_worker_picks_this_transport_by_url() -> None:
    from faust.transport import by_url

    assert broker_urls("h1:9092,h2:9093") == [f"{SCHEME}://h1:9092", f"{SCHEME}://h2:9093"]
    assert by_url(broker_urls("h1:9092")[0]) is Transport
