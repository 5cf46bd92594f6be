"""Makes each batch's effects durable in the order docs/reliability.md
argues for, and only then lets Faust commit the batch's input offsets:

1. the sends (triggers, internal messages, dead letters), acknowledged — a
   dead letter that cannot be sent is sent by reference instead, retried
   until it is acknowledged: it never stops the worker nor lets the batch
   be committed without it;
2. the new states on the changelog, acknowledged;
3. the states in the partition's RocksDB database with the changelog offset
   they reach, in one write batch;
4. the input records acknowledged to Faust (their offsets committable).

Until step 3 a new state lives only in :attr:`Committer.pending`, which the
engine reads first: the next batches see it at once, a crash forgets it. One
task takes the batches in order; it takes every batch waiting at once, so a
busy worker pays each round trip once per group of batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from agents.errors import InfrastructureError
from agents.worker.store import BatchStore
from streams.codec import decode_state
from streams.errors import StateError
from streams.userstate import UserState

logger = logging.getLogger(__name__)

#: ``(topic, key, value, headers)`` of a record to send
Send = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]
#: hands a record to the producer; the awaitable resolves on its acknowledgement
Producer = Callable[[str, bytes | None, bytes | None, int | None, Any], Awaitable[Awaitable[Any]]]
#: acknowledges one input record to Faust
Ack = Callable[[Any], Awaitable[Any]]

#: Batches the engine may run ahead of the committer before it waits.
MAX_PENDING_BATCHES = 8
#: The longest wait between two attempts to send a dead letter by reference.
MAX_RETRY_DELAY_S = 30.0


@dataclass
class Effects:
    """What one engine batch of one partition decided, to make durable."""

    partition: int
    #: records to send, in the order the engine decided them
    sends: list[Send] = field(default_factory=list)
    #: dead letters: each as it is and by reference (sent when the first fails)
    dead_letters: list[tuple[Send, Send]] = field(default_factory=list)
    #: the partition's new states: key → (state, its encoded bytes; None deletes)
    writes: dict[bytes, tuple[UserState | None, bytes | None]] = field(default_factory=dict)
    #: the input records to acknowledge once everything above is durable
    inputs: Sequence[Any] = ()
    #: how to acknowledge them (the stream they came from)
    ack: Ack | None = None


@dataclass
class _Pending:
    state: UserState | None
    batch: int


class Committer:
    """The one task that makes batches durable, in the order they were made."""

    def __init__(
        self,
        send: Producer,
        changelog_topic: str,
        store: Callable[[], BatchStore],
        *,
        on_error: Callable[[BaseException], Awaitable[Any]],
        on_stored: Callable[[int, int], Any] | None = None,
        max_pending: int = MAX_PENDING_BATCHES,
        retry_delay_s: float = 0.5,
    ) -> None:
        self._send = send
        self.changelog_topic = changelog_topic
        self._store = store
        self._on_error = on_error
        #: told (partition, changelog offset) after each local write batch
        self._on_stored = on_stored
        self._retry_delay_s = retry_delay_s
        #: set by :meth:`drain`: a dead letter being retried gives up (uncommitted)
        self._closing = False
        #: key → the newest state not yet in the local database
        self.pending: dict[bytes, _Pending] = {}
        self._queue: asyncio.Queue[tuple[int, Effects]] = asyncio.Queue(max_pending)
        self._made = 0
        self._task: asyncio.Task[None] | None = None
        #: what the committer has made durable (exposed on /counters/)
        self.committed_batches = 0
        self.committed_groups = 0
        self.changelog_records = 0
        #: dead letters sent by reference after the letter itself failed
        self.dead_letter_fallbacks = 0

    def pending_state(self, key: bytes) -> tuple[bool, UserState | None]:
        """(True, state) when ``key`` has a state not yet stored locally."""
        entry = self.pending.get(key)
        if entry is None:
            return False, None
        return True, entry.state

    def loader(self, number: int) -> Callable[[bytes], UserState | None]:
        """Reads a user's state of partition ``number``: the pending state
        first (not yet stored locally), else the local store."""
        pending = self.pending_state
        get = self._store().get_in

        def load(key: bytes) -> UserState | None:
            known, state = pending(key)
            if known:
                return state
            raw = get(number, key)
            if raw is None:
                return None
            try:
                return decode_state(raw)
            except StateError:
                logger.exception("user-state for %r is unreadable; starting it afresh", key)
                return None

        return load

    @property
    def backlog(self) -> int:
        """Batches handed over and not yet committed."""
        return self._queue.qsize()

    async def submit(self, effects: Effects) -> None:
        """Hand over one batch's effects (its new states are visible to
        :meth:`pending_state` at once); waits while the committer is
        :data:`MAX_PENDING_BATCHES` behind."""
        self._made += 1
        number = self._made
        for key, (state, _) in effects.writes.items():
            self.pending[key] = _Pending(state, number)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        await self._queue.put((number, effects))

    async def drain(self) -> None:
        """Wait until every batch handed over is committed (or the committer
        stopped on an error: what it had not committed stays uncommitted)."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        joined = asyncio.ensure_future(self._queue.join())
        await asyncio.wait({joined, task}, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        queue = self._queue
        while True:
            group = [await queue.get()]
            while not queue.empty():
                group.append(queue.get_nowait())
            try:
                await self._commit(group)
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # a send or write failed: nothing more is committed
                if self._closing and isinstance(error, InfrastructureError):
                    logger.warning("%s; left uncommitted at shutdown", error)
                    return
                logger.error("could not make a batch durable (%s); stopping the worker", error)
                await self._on_error(error)
                return
            finally:
                for _ in group:
                    queue.task_done()

    async def _commit(self, group: list[tuple[int, Effects]]) -> None:
        send = self._send
        # 1. the sends, acknowledged
        deliveries: list[Awaitable[Any]] = []
        for _, effects in group:
            for topic, key, value, headers in effects.sends:
                deliveries.append(await send(topic, key, value, None, headers))
            for letter, fallback in effects.dead_letters:
                deliveries.append(asyncio.ensure_future(self._dead_letter(letter, fallback)))
        if deliveries:
            await asyncio.gather(*deliveries)
        # 2. the states on the changelog, acknowledged (a later batch's state wins)
        newest: dict[int, dict[bytes, tuple[int, bytes | None]]] = {}
        for number, effects in group:
            part = newest.setdefault(effects.partition, {})
            for key, (_, raw) in effects.writes.items():
                part[key] = (number, raw)
        changelog = self.changelog_topic
        acked: dict[int, list[Awaitable[Any]]] = {}
        for partition, writes in newest.items():
            acked[partition] = [
                await send(changelog, key, raw, partition, None) for key, (_, raw) in writes.items()
            ]
        # 3. the states in the local database, with the changelog offset they reach
        store = self._store()
        for partition, futures in acked.items():
            if not futures:
                continue
            metadata = await asyncio.gather(*futures)
            offset = max(m.offset for m in metadata)
            writes = newest[partition]
            store.write_batch(
                TP(changelog, partition), {k: raw for k, (_, raw) in writes.items()}, offset
            )
            self.changelog_records += len(futures)
            if self._on_stored is not None:
                self._on_stored(partition, offset)
            pending = self.pending
            for key, (number, _) in writes.items():
                entry = pending.get(key)
                if entry is not None and entry.batch == number:
                    del pending[key]  # not superseded by a later batch
        # 4. the inputs acknowledged to Faust
        for _, effects in group:
            if effects.ack is not None:
                for record in effects.inputs:
                    await effects.ack(record)
        self.committed_batches += len(group)
        self.committed_groups += 1

    async def _deliver(self, record: Send) -> Any:
        topic, key, value, headers = record
        return await (await self._send(topic, key, value, None, headers))

    async def _dead_letter(self, letter: Send, fallback: Send) -> None:
        """Send ``letter``; when that fails (too big for the producer or the
        topic, say), send ``fallback`` — the letter by reference — until it
        is acknowledged. Only a shutdown stops the retries, and then the
        batch is not committed (its records are read again)."""
        try:
            await self._deliver(letter)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning(
                "a dead letter could not be sent as it is (%s); sending it by reference", error
            )
        delay = self._retry_delay_s
        while True:
            try:
                await self._deliver(fallback)
                self.dead_letter_fallbacks += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._closing:
                    raise InfrastructureError(f"a dead letter was not sent ({error})") from error
                logger.error(
                    "a dead letter by reference could not be sent (%s); retrying in %.1f s",
                    error, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)  # back-off between retries
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
