"""The worker's Kafka transport: Faust's aiokafka driver with two changes,
chosen by the broker URL scheme ``userpulse-kafka://`` (the ``faust.transports``
entry point in pyproject.toml — Faust's documented way to pick a consumer).

**No record handed over that Faust would drop.** Faust's fetch loop asks
aiokafka for the records of its *active* partitions (assigned and not
paused), passing its live set of them to the consumer thread, and drops
whatever comes back for a partition that is no longer active. aiokafka reads
an *empty* set as "every partition", and moves its position past every record
it hands over. At the end of a recovery the active set is empty for a moment
(the changelogs are paused, the inputs not yet resumed), so a fetch waiting
then returned the paused input partitions' records; Faust dropped them and
aiokafka's position stayed past them. When that happened after the seek to
the committed offsets, those records were never read again: the partition's
commit stopped before them and its backlog stalled for good (the scaling
fault scenario, tests/faults/test_scaling.py). :class:`ConsumerThread` asks
for a copy of the set, asks nothing while it is empty, and seeks a partition
back to the first record it returns when that partition stopped being active
meanwhile — in the consumer thread, in the same step, so no other seek comes
between.

**A short fetch long-poll.** Faust creates its aiokafka consumer with
``fetch_max_wait_ms=1500``, fixed. aiokafka sends a partition no new fetch
while an earlier fetch is in flight or its records are still buffered; a
fetch that includes an idle partition (the derived topic, mostly) waits on
the broker up to that long, and a busy partition's next records wait with it.
Measured at 2,000 events/s offered: ingest → trigger p50 372 ms and p99 1.9 s
with 1,500 ms; p50 57 ms and p99 264 ms with 10 ms (docs/benchmarks.md).

What was tried and left out: replacing Faust's per-message
``wait_first(callback(message), suspend_flow.wait())`` in the fetch loop with
a direct ``await`` (a bare agent read 12,000 events/s with it and 15,000
without) lost records delivered while Faust sought to the committed offsets
(docs/development.md); :mod:`agents.worker.recovery` now seeks before the
inputs resume, so it may be tried again.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from aiokafka.errors import ConsumerStoppedError, IllegalStateError
from faust.transport.drivers import aiokafka as faust_aiokafka

#: The URL scheme of this transport (the worker's broker URLs use it).
SCHEME = "userpulse-kafka"
#: The broker holds a fetch at most this long when no partition in it has new
#: records (aiokafka's default is 500 ms; Faust's 1,500 ms).
FETCH_MAX_WAIT_MS = 10


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread; fetches hand over only records Faust keeps."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), not yet called
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        faust_consumer: Any = self.consumer
        if not faust_consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise ConsumerStoppedError()
        wanted = frozenset(active_partitions)  # the live set changes under us
        if not wanted:
            return {}  # aiokafka would read "no partitions" as "all of them"
        with fetcher._subscriptions.fetch_context():
            records = await fetcher.fetched_records(
                wanted, timeout=timeout, max_records=max_records
            )
        # no await from here on: nothing runs between the check and the seek
        kept = (faust_consumer._active_partitions or set()) | faust_consumer._buffered_partitions
        for tp in [tp for tp in records if tp not in kept]:
            first = records.pop(tp)[0].offset
            with suppress(IllegalStateError):  # not assigned: its owner reads from the commit
                consumer.seek(tp, first)  # read again once the partition resumes
        return records


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer


def broker_urls(bootstrap: str) -> list[str]:
    """The worker's Faust broker URLs for ``host:port,host:port``."""
    return [f"{SCHEME}://{server}" for server in bootstrap.split(",")]
