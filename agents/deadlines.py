"""A worker's deadline index: per owned partition, which user's deadline
comes next, and how far that partition's stream time has got.

The index is memory only. After a rebalance it is rebuilt from the state
table, in the background and a chunk of rows at a time, so that the stream
is processed meanwhile: a user stored during the rebuild schedules its own
deadline, which the rebuild then leaves alone, and a deadline not yet
indexed fires late at worst by the rebuild's duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka.partitioner import murmur2

from streams.errors import StateError
from streams.state import UserState, decode_state
from streams.timed import TimerIndex

logger = logging.getLogger(__name__)

#: The index is rebuilt this many table rows at a time between yields to
#: the event loop.
REBUILD_CHUNK = 2000

#: A user's next deadline (None: nothing to wait for), under the policy and
#: the churn model in use when it is asked.
DeadlineOf = Callable[[UserState | None], int | None]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class Deadlines:
    """The deadline index and stream time of the partitions a worker owns."""

    def __init__(self, partitions: int, deadline_of: DeadlineOf) -> None:
        self.partitions = partitions
        self.deadline_of = deadline_of
        #: per owned partition: the deadline index and the stream time
        self.timers: dict[int, TimerIndex] = {}
        self.stream_time: dict[int, int] = {}
        self.owned: set[int] = set()
        #: rebuilds started, and how long the last complete one took
        self.rebuilds = 0
        self.last_rebuild_s = 0.0
        self._rebuild: asyncio.Future[None] | None = None
        #: keys scheduled since the running rebuild began (newer than what it reads)
        self._fresh: set[bytes] | None = None

    @property
    def rebuilding(self) -> bool:
        return self._rebuild is not None

    @property
    def pending(self) -> int:
        return sum(len(index) for index in self.timers.values())

    def advance(self, partition: int, timestamp_ms: int) -> None:
        """An event of ``timestamp_ms`` was seen on ``partition``."""
        if timestamp_ms > self.stream_time.get(partition, 0):
            self.stream_time[partition] = timestamp_ms

    def schedule(self, partition: int, key: bytes, state: UserState | None) -> None:
        """``key``'s next deadline, from its newest state."""
        if self._fresh is not None:
            self._fresh.add(key)
        index = self.timers.setdefault(partition, TimerIndex())
        index.set(key, self.deadline_of(state))

    def rebuild(self, owned: set[int], rows: Callable[[], Iterable[tuple[bytes, bytes]]]) -> None:
        """Start rebuilding the index of ``owned`` from ``rows()`` (the state
        table's key/value pairs), superseding a rebuild still running."""
        if self._rebuild is not None:
            self._rebuild.cancel()
        self.timers = {p: TimerIndex() for p in owned}
        self.owned = owned
        self._fresh = set()
        self.rebuilds += 1
        self._rebuild = asyncio.ensure_future(self._rebuild_in_chunks(owned, rows))

    async def _rebuild_in_chunks(
        self, owned: set[int], rows: Callable[[], Iterable[tuple[bytes, bytes]]]
    ) -> None:
        started = time.monotonic()
        timers, fresh = self.timers, self._fresh
        assert fresh is not None  # set by rebuild, cleared only at the end
        seen = 0
        try:
            for key, raw in rows():
                seen += 1
                if seen % REBUILD_CHUNK == 0:
                    await asyncio.sleep(0)  # let the stream and the timers run
                partition = partition_of(key, self.partitions)
                if partition not in owned or key in fresh:
                    continue
                try:
                    state = decode_state(raw)
                except StateError:
                    continue
                timers[partition].set(key, self.deadline_of(state))
                self.advance(partition, state.last_seen_ms)
        except asyncio.CancelledError:
            logger.info("timers: rebuild of partitions %s superseded", sorted(owned))
            raise
        except Exception:  # e.g. a table closed by a rebalance under way: it rebuilds again
            logger.exception("timers: rebuild of partitions %s failed", sorted(owned))
            self._rebuild = self._fresh = None
            return
        self._fresh = None
        self._rebuild = None
        self.last_rebuild_s = round(time.monotonic() - started, 3)
        logger.info(
            "timers: %d deadlines on partitions %s rebuilt in %.2f s (%d table rows read)",
            sum(len(i) for i in timers.values()),
            sorted(owned),
            self.last_rebuild_s,
            seen,
        )

    async def wait_rebuilt(self) -> None:
        """Until the running rebuild (if any) has ended."""
        while self._rebuild is not None:
            await asyncio.wait({self._rebuild})
