"""Redis made whole again after a crash or after Redis lost its data
(docs/reliability.md, "Redis").

The projection is flushed on a timer, apart from the commit: a worker killed
after a batch was committed and before its profiles were flushed leaves them
behind; a Redis restarted without its data loses every profile. So each
partition records in Redis the user-state changelog offset up to which its
profiles are all written (:func:`agents.redis.keys.projected_key`; the
committer reports the offsets it makes durable, the flush writes them once
everything staged before is applied). A worker that takes a partition
compares that offset with the offset its local state reaches; when Redis is
behind — or has no offset, or lost it while the worker ran — every state of
the partition is compared with its profile's version in Redis (pipelined, a
chunk at a time, between batches) and the ones behind are staged again.
Then the partition's offset is written again, created afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from agents.redis.projection import Behind, RedisProjection
from agents.worker.store import BatchStore
from streams.codec import decode_state
from streams.errors import StateError
from streams.profile import mirrored
from streams.userstate import STAGE_ERASED, UserState

logger = logging.getLogger(__name__)

#: States compared with Redis per round trip.
CHUNK = 1000
#: How often the owned partitions' offsets are checked for a Redis that lost them.
CHECK_EVERY_S = 5.0
#: The wait before comparing again after Redis failed.
RETRY_S = 2.0


@dataclass
class Reprojector:
    """Keeps each owned partition's Redis profiles complete."""

    projection: RedisProjection
    store: Callable[[], BatchStore]
    #: stages a state's profile (the pipeline's own staging)
    project: Callable[[bytes, UserState], None]
    #: the partitions this worker owns now
    owned: Callable[[], Collection[int]]
    #: the prefix's environment marker, set again when Redis lost its data
    environment: bytes | None = None
    #: partition → the changelog offset every staged profile reaches
    marks: dict[int, int] = field(default_factory=dict)
    #: partitions compared in full whose offset key may be created
    created: set[int] = field(default_factory=set)
    #: what was compared and staged again (exposed on /counters/)
    compared: int = 0
    restaged: int = 0
    _task: asyncio.Task[None] | None = None
    _queued: set[tuple[int, bool]] = field(default_factory=set)
    _checked_at: float = 0.0

    def stored(self, partition: int, offset: int) -> None:
        """The committer made ``partition``'s states durable up to ``offset``
        (their profiles were staged before)."""
        if offset > self.marks.get(partition, -1):
            self.marks[partition] = offset

    def assigned(self, partitions: Collection[int]) -> None:
        """Partitions just taken: compare those Redis is behind on."""
        self._start(partitions, known=False)

    async def flush(self, now: float) -> None:
        """The projection's flush, with the offsets; partitions Redis lost,
        or (every :data:`CHECK_EVERY_S`) whose offset key is gone, are
        compared again."""
        marks = dict(self.marks)  # before the flush takes what is staged
        created = frozenset(self.created & marks.keys())
        await self.projection.flush(now, marks, created)
        self.created -= created
        if now - self._checked_at >= CHECK_EVERY_S:
            self._checked_at = now
            with suppress(RedisError, OSError):  # the flush logs outages
                await self.projection.check(sorted(self.owned()))
        if self.projection.lost:
            lost = set(self.projection.lost)
            self.projection.lost.clear()
            if self.environment is not None:
                with suppress(RedisError, OSError):  # claimed by the next start otherwise
                    await self.projection.claim(self.environment)
            self._start(lost, known=True)

    def _start(self, partitions: Collection[int], *, known: bool) -> None:
        self._queued |= {(p, known) for p in partitions}
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._queued:
            partition, lost = min(self._queued)
            self._queued.discard((partition, lost))
            if partition not in self.owned():
                continue
            try:
                await self._partition(partition, lost=lost)
            except (RedisError, OSError) as exc:
                logger.warning(
                    "Redis: partition %d not compared (%s); again in %.0f s",
                    partition, exc, RETRY_S,
                )  # fmt: skip
                self._queued.add((partition, lost))
                await asyncio.sleep(RETRY_S)

    async def _partition(self, partition: int, *, lost: bool) -> None:
        store = self.store()
        reached = store.offset_in(partition)
        projected = None
        if not lost:
            projected = (await self.projection.projected([partition]))[partition]
            # what this process staged counts too: it is flushed (or retried) anyway
            known = max(-1 if projected is None else projected, self.marks.get(partition, -1))
            if (projected is not None or partition in self.marks) and (
                reached is not None and known >= reached
            ):
                return  # Redis has, or is about to have, every profile
        started = time.monotonic()
        counts = await self._compare(store, partition)
        if counts is None:
            return  # the partition moved on meanwhile: its new owner compares
        compared, restaged = counts
        self.compared += compared
        self.restaged += restaged
        if reached is not None:
            self.stored(partition, reached)
        else:
            self.marks.setdefault(partition, -1)
        self.created.add(partition)
        logger.info(
            "Redis: partition %d compared with the state (%s): %d profiles, %d written again, "
            "in %.2f s",
            partition,
            "Redis had lost it" if lost else f"Redis at {projected}, state at {reached}",
            compared, restaged, time.monotonic() - started,
        )  # fmt: skip

    async def _compare(self, store: BatchStore, partition: int) -> tuple[int, int] | None:
        """Every state of ``partition`` compared with its profile, a chunk at
        a time, and the missing or older ones staged again: (compared,
        written again), or None when the partition is no longer owned."""
        compared = restaged = 0
        after: bytes | None = None
        while partition in self.owned():
            rows = store.items_in(partition, after, CHUNK)
            if not rows:
                return compared, restaged
            after = rows[-1][0]
            states: list[tuple[bytes, UserState]] = []
            for key, raw in rows:
                try:
                    state = decode_state(raw)
                except StateError:
                    continue  # logged when the engine reads it
                if state.stage == STAGE_ERASED or mirrored(state):
                    states.append((key, state))
            checks = [
                Behind(
                    key.decode() if state.stage == STAGE_ERASED else state.user_id,
                    state.revision,
                    state.stage == STAGE_ERASED,
                )
                for key, state in states
            ]
            for i in await self.projection.behind(checks) if checks else []:
                self.project(*states[i])
                restaged += 1
            compared += len(states)
        return None
