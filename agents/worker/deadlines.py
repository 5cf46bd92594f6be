"""A worker's deadline index: per owned partition, which user's deadline
comes next, and how far that partition's stream time has got — the
engine's :class:`~streams.engine.Partition` of each partition it owns.

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

from streams.codec import decode_state
from streams.errors import StateError
from streams.partition import Clock, Partition, TimerIndex
from streams.partitioning import partition_of
from streams.userstate import UserState

logger = logging.getLogger(__name__)

#: The index is rebuilt this many table rows at a time between yields to
#: the event loop.
REBUILD_CHUNK = 2000

#: A user's next deadline (None: nothing to wait for), under the policy and
#: the churn model in use when it is asked.
DeadlineOf = Callable[[UserState | None], int | None]


class Deadlines:
    """The deadline index and stream time of the partitions a worker owns."""

    def __init__(
        self,
        partitions: int,
        deadline_of: DeadlineOf,
        *,
        clock: Clock = "stream",
        lateness_ms: int | None = None,
    ) -> None:
        self.partitions = partitions
        self.deadline_of = deadline_of
        self.clock: Clock = clock
        self.lateness_ms = lateness_ms
        #: per partition seen: the engine's clock and deadline index
        self.parts: dict[int, Partition] = {}
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

    def part(self, number: int) -> Partition:
        """The engine's view of partition ``number`` (made on first use)."""
        part = self.parts.get(number)
        if part is None:
            part = self.parts[number] = Partition(number, self.clock, self.lateness_ms)
        return part

    @property
    def timers(self) -> dict[int, TimerIndex]:
        return {number: part.timers for number, part in self.parts.items()}

    @property
    def stream_time(self) -> dict[int, int]:
        return {n: p.stream_ms for n, p in self.parts.items() if p.stream_ms}

    @property
    def pending(self) -> int:
        return sum(len(part.timers) for part in self.parts.values())

    def overdue(self, wall_ms: int) -> int:
        """Deadlines of owned partitions that are due now (on the partition's
        clock) and not decided yet."""
        due = 0
        for number in self.owned:
            part = self.parts.get(number)
            until = part.idle_until(wall_ms) if part is not None else None
            if part is not None and until is not None:
                due += part.timers.count_due(until)
        return due

    def advance(self, partition: int, timestamp_ms: int) -> None:
        """An event of ``timestamp_ms`` was seen on ``partition``."""
        self.part(partition).observe(timestamp_ms)

    def stored(self, keys: Iterable[bytes]) -> None:
        """The stream stored ``keys`` (and set their deadlines): a running
        rebuild, which may have read older rows, leaves them alone."""
        if self._fresh is not None:
            self._fresh.update(keys)

    def rebuild(self, owned: set[int], rows: Callable[[], Iterable[tuple[bytes, bytes]]]) -> None:
        """Start rebuilding the index of ``owned`` from ``rows()`` (the state
        table's key/value pairs), superseding a rebuild still running."""
        if self._rebuild is not None:
            self._rebuild.cancel()
        for number in owned:
            self.part(number).timers = TimerIndex()
        for number in set(self.parts) - owned:
            del self.parts[number]  # another worker's now
        self.owned = owned
        self._fresh = set()
        self.rebuilds += 1
        self._rebuild = asyncio.ensure_future(self._rebuild_in_chunks(owned, rows))

    async def _rebuild_in_chunks(
        self, owned: set[int], rows: Callable[[], Iterable[tuple[bytes, bytes]]]
    ) -> None:
        started = time.monotonic()
        timers, fresh = {n: self.part(n).timers for n in owned}, self._fresh
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
