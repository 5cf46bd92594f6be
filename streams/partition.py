"""What the engine remembers of one partition between batches
(:class:`Partition`): its clock, its stream time and the deadline index of
its users (:class:`TimerIndex`) — memory only, rebuilt from the stored states
after a restart or rebalance. (Which partition a key belongs to is
:mod:`streams.partitioning`.)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Clock = Literal["wall", "stream"]


@dataclass
class TimerIndex:
    """Deadlines of one partition's users: O(log n) per change, due users
    popped in deadline order; never a scan of all users per tick."""

    _heap: list[tuple[int, bytes]] = field(default_factory=list)
    _deadline: dict[bytes, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._deadline)

    def count_due(self, until_ms: int) -> int:
        """How many deadlines are at or before ``until_ms`` (a scan: for
        metrics when scraped, never for deciding)."""
        return sum(1 for deadline in self._deadline.values() if deadline <= until_ms)

    def set(self, key: bytes, deadline: int | None) -> None:
        """Set (or clear, with None) ``key``'s deadline."""
        if deadline is None:
            self._deadline.pop(key, None)  # its heap entry is dropped when popped
            return
        if self._deadline.get(key) == deadline:
            return
        self._deadline[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 4 * len(self._deadline) + 64:
            self._compact()

    def peek(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> Iterator[tuple[bytes, int]]:
        """Remove and yield (key, deadline) of every key due at ``now_ms``."""
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now_ms:
                return
            deadline, key = heapq.heappop(self._heap)
            del self._deadline[key]
            yield key, deadline

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(d, k) for k, d in self._deadline.items()]
        heapq.heapify(self._heap)


@dataclass
class Partition:
    """What the engine remembers of one partition between batches: its clock
    and the deadline index of its users (memory only: rebuilt from the
    stored states after a restart or rebalance)."""

    number: int
    clock: Clock = "stream"
    #: stream clock: fire deadlines in-stream once stream time is this far
    #: past them (None: only on the user's next input or when idle)
    lateness_ms: int | None = None
    #: the highest event time seen (0: none yet)
    stream_ms: int = 0
    timers: TimerIndex = field(default_factory=TimerIndex)

    def observe(self, timestamp_ms: int) -> None:
        if timestamp_ms > self.stream_ms:
            self.stream_ms = timestamp_ms

    def busy_until(self, wall_ms: int) -> int | None:
        """Up to when a batch decides the partition's due deadlines (None: not in-stream)."""
        if self.clock == "wall":
            return wall_ms
        if self.lateness_ms is None or not self.stream_ms:
            return None
        return self.stream_ms - self.lateness_ms

    def idle_until(self, wall_ms: int) -> int | None:
        """Up to when deadlines are due while the partition has no traffic."""
        if self.clock == "wall":
            return wall_ms
        return self.stream_ms or None

    def pop_due(self, until_ms: int) -> list[bytes]:
        """Take the keys whose deadline is at or before ``until_ms`` off the index."""
        return [key for key, _deadline in self.timers.pop_due(until_ms)]
