"""The worker: one agent per input topic, a changelog-backed state table,
the Redis projection flushed by a timer, triggers sent to their topics (the
Faust app and its topics are built in :mod:`agents.worker.app`).

The agent only reads, calls the pure core and hands what it decided to the
committer (:mod:`agents.committer`), which makes it durable in the order of
docs/reliability.md before the input offsets are committed; every decision
lives in :mod:`streams`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable
from typing import Any, cast

import orjson

from agents.environment import identity
from agents.errors import DataDirError
from agents.kafka.deadletters import dead_letter_sends
from agents.kafka.model_topic import Model, follow_model
from agents.redis.projection import RedisProjection
from agents.settings import Settings
from agents.worker import metrics
from agents.worker.app import Topics, new_app
from agents.worker.committer import Committer, Effects, Send
from agents.worker.counters import Counters, snapshot
from agents.worker.counters import install as install_counters
from agents.worker.deadlines import Deadlines
from agents.worker.health import Health
from agents.worker.metrics import Metrics
from agents.worker.model import model_fields
from agents.worker.reprojection import Reprojector
from agents.worker.status import membership, sample
from agents.worker.store import BatchStore
from streams.batch import Batch, Record
from streams.churn import ChurnModel
from streams.codec import encode_state
from streams.contract import Limits
from streams.derived import DerivedMessage, Due, encode_derived
from streams.engine import Engine
from streams.errors import EventError
from streams.policy import DEFAULT_POLICY, Policy
from streams.profile import mirrored, profile_fields, profile_indexes
from streams.triggers import encode_trigger
from streams.userstate import STAGE_ERASED, UserState

logger = logging.getLogger(__name__)

#: How often staged Redis profiles are flushed, in seconds.
PROJECTION_FLUSH_INTERVAL_S = 0.25
#: How often due deadlines are looked for, in seconds (timer precision).
TIMER_TICK_S = 0.2
#: A partition a batch came from less than this long ago has its due
#: deadlines decided by its batches, in-stream; the timer leaves it alone.
TIMER_HANDOFF_S = 0.25


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline:
    """The Faust app of one userpulse worker, configured by ``settings``."""

    def __init__(self, settings: Settings, policy: Policy = DEFAULT_POLICY) -> None:
        self.settings = settings
        self.policy = policy
        self.counters = Counters()
        limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=settings.max_future_skew_s * 1000,
        )
        #: the churn model's newest parameters (None until `userpulse fit` published some)
        self.model: Model | None = None
        #: the one pure call every batch goes through (streams/engine.py)
        self.engine = Engine(policy, limits=limits)
        if settings.clock == "wall" and settings.profile_refresh_s > 0:
            self.engine.refresh_ms = settings.profile_refresh_s * 1000
        self.app = new_app(settings)
        #: the topics and the state table (agents/worker/app.py)
        self.topics = Topics(self.app, settings)
        self.state = self.topics.state
        self.projection = RedisProjection.from_url(
            settings.redis_url.reveal(), settings.redis_key_prefix
        )
        self.app.agent(self.topics.events, name="user-events")(self.process)
        self.app.agent(self.topics.derived, name="derived")(self.process_derived)
        self.app.timer(PROJECTION_FLUSH_INTERVAL_S, name="redis-projection-flush")(
            self.flush_projection
        )
        install_counters(self.app, lambda: snapshot(
            self.counters, self.committer, self.deadlines, self.projection, self.reprojector
        ))  # fmt: skip
        #: the tables of a first assignment were recovered
        self.recovered = False
        #: (topic, partition) → the offset after the last record processed
        self.read_to: dict[tuple[str, int], int] = {}
        #: GET /metrics (agents/worker/metrics.py)
        self.metrics = Metrics()
        metrics.install(self.app, self.metrics, lambda: sample(self))
        #: GET /health/live and /health/ready (agents/worker/health.py)
        self.health = Health(
            self.app,
            settings.kafka_bootstrap,
            self.projection.ping,
            lambda: membership(self),
            settings.unreachable_s,
        )
        self.app.on_before_shutdown.connect(self._on_shutdown)
        lateness = settings.stream_lateness_s
        self.deadlines = Deadlines(
            settings.partitions,
            self.engine.next_deadline,
            clock="stream" if settings.clock == "stream" else "wall",
            lateness_ms=lateness * 1000 if lateness is not None else None,
        )
        #: when a batch last came from each partition (monotonic seconds)
        self._batch_seen: dict[int, float] = {}
        self.app.timer(TIMER_TICK_S, name="deadline-timers")(self.fire_timers)
        #: keeps Redis complete after a crash, or after Redis lost its data
        self.reprojector = Reprojector(
            self.projection,
            self._store,
            self._project,
            lambda: self.deadlines.owned,
            environment=orjson.dumps(identity(settings)),
        )
        #: makes each batch durable in order, then acknowledges its records
        self.committer = Committer(
            self._producer_send,
            self.topics.changelog_name,
            self._store,
            on_error=self._on_commit_error,
            on_stored=self.reprojector.stored,
        )
        self._stopping = asyncio.Event()
        self.app.task(self._follow_model)
        self.app.on_rebalance_complete.connect(self._on_rebalanced)

    async def process(self, stream: Any) -> None:
        """The user-events agent: a batch at a time — up to
        ``USERPULSE_BATCH_MAX_EVENTS`` events, or what arrived within
        ``USERPULSE_BATCH_WAIT_MS`` — through the engine (:meth:`run`). The
        committer acknowledges a batch's records (their offsets become
        committable) once everything the batch decided is durable."""
        batch_max = self.settings.batch_max_events
        within = self.settings.batch_wait_ms / 1000
        async for records in stream.noack_take(batch_max, within=within):
            await self.run(records, stream, derived=False)

    async def process_derived(self, stream: Any) -> None:
        """The derived-messages agent: identity merges, referral credits and
        timer deadlines (see :mod:`streams.derived`), through the same engine."""
        batch_max = self.settings.batch_max_events
        within = self.settings.batch_wait_ms / 1000
        async for records in stream.noack_take(batch_max, within=within):
            await self.run(records, stream, derived=True)

    async def run(self, records: list[Any], stream: Any, *, derived: bool) -> None:
        """Hand each partition's share of ``records`` to the engine, then
        what it decided to the committer."""
        by_partition: dict[int, list[Record]] = {}
        taken: dict[int, list[Any]] = {}
        for record in records:
            message = record.message
            number: int = message.partition
            inputs = by_partition.get(number)
            if inputs is None:
                inputs = by_partition[number] = []
                taken[number] = []
            inputs.append(Record(record.key, record.value, message.offset, derived))
            taken[number].append(record)
        seen_at = time.monotonic()
        for number, inputs in by_partition.items():
            batch = self.engine.run(
                self.deadlines.part(number), inputs, self.committer.loader(number), now_ms=now_ms()
            )
            self.deadlines.stored(batch.writes)
            if not derived:
                self._batch_seen[number] = seen_at
            effects = self._effects(number, taken[number], batch)
            effects.ack = stream.ack
            await self.committer.submit(effects)

    def _effects(self, number: int, records: list[Any], batch: Batch) -> Effects:
        """What one engine batch of partition ``number`` decided, as the
        committer makes it durable: the sends (dead letters, triggers,
        internal messages) and the new states; the profiles of the changed
        and of the redelivered users are staged for Redis."""
        counters = self.counters
        counters.events += batch.events
        counters.batches += 1
        counters.timers_fired += batch.timers_fired
        counters.redelivered += batch.redelivered
        effects = Effects(number, inputs=records)
        sends = effects.sends
        first = records[0].message
        topic = first.topic
        self.read_to[(topic, number)] = records[-1].message.offset + 1
        emitted_at = now_ms()
        # the first record (by offset) is the one the batch waited for longest
        self.metrics.batch(topic, len(records), batch, int(first.timestamp * 1000), emitted_at)
        for letter in batch.dead_letters:
            effects.dead_letters.append(
                self._dead_letter(topic, number, letter.record, letter.error)
            )
        for bad in batch.malformed:
            logger.error(
                "skipping malformed derived message at %s[%d]@%d: %s",
                topic, number, bad.record.offset, bad.error,
                extra={"topic": topic, "partition": number, "offset": bad.record.offset},
            )  # fmt: skip
        if batch.triggers:
            names = self.topics.trigger_names
            for trigger in batch.triggers:
                value = encode_trigger(trigger, emitted_at_ms=emitted_at)
                sends.append((names[trigger.topic], trigger.user_id.encode(), value, None))
            counters.triggers += len(batch.triggers)
        derived = self.topics.derived_name
        for message in batch.derived:
            sends.append((derived, message.key.encode(), encode_derived(message), None))
        writes = effects.writes
        for key, new in batch.writes.items():
            writes[key] = (new, encode_state(new))
            self._project(key, new)
        counters.state_writes += len(batch.writes)
        if batch.redelivered_keys:
            load = self.committer.loader(number)
            for key in dict.fromkeys(batch.redelivered_keys):
                if key not in writes:
                    state = load(key)
                    if state is not None:
                        self._project(key, state)  # the one write a crash can have lost
        return effects

    def _project(self, key: bytes, state: UserState) -> None:
        """Stage the profile of ``key``'s ``state`` for Redis (its revision
        orders the writes); an erasure marker has no id of its own: the key is it."""
        revision = state.revision
        if state.stage == STAGE_ERASED:
            self.projection.erase(key.decode(), revision)
        elif mirrored(state):
            fields = {**profile_fields(state, version=revision), **model_fields(self.model, state)}
            self.projection.stage(state.user_id, revision, fields, profile_indexes(state))

    async def _on_commit_error(self, error: BaseException) -> None:
        """A batch could not be made durable: a disk that is full or
        read-only stops the worker at once with one clear line and exit
        code 2 — as a crash would, which the order of docs/reliability.md
        makes safe (a graceful stop would wait forever for the batch that
        cannot be stored); anything else crashes it with Faust's report."""
        fatal = DataDirError.of(error, self.settings.data_dir)
        if fatal is None:
            await self.app.crash(error)
            return
        logger.critical("%s", fatal)
        for handler in logging.getLogger().handlers:
            handler.flush()
        print(f"userpulse: error: {fatal}", file=sys.stderr, flush=True)
        os._exit(2)

    def _store(self) -> BatchStore:
        return cast(BatchStore, self.state.data)

    async def _producer_send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> Awaitable[Any]:
        """Hand a record to the producer; the awaitable resolves on its acknowledgement."""
        delivery: Awaitable[Any] = await self.app.producer.send(
            topic, key, value, partition, None, headers
        )
        return delivery

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Hand a timer's ``Due`` to the producer without waiting for its
        delivery: it is derived from memory (the deadline index), not from an
        input, so a ``Due`` lost in a crash is sent again by the rebuilt
        index. A failed delivery stops the worker."""
        delivery = await self.app.producer.send(topic, key, value, None, None, headers)
        asyncio.ensure_future(delivery).add_done_callback(self._on_delivered)

    def _on_delivered(self, delivery: Any) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            return
        error = delivery.exception()
        self.counters.send_errors += 1
        logger.error("a record could not be delivered (%s); stopping the worker", error)
        self.app.loop.create_task(self.app.crash(error))

    # ---- timers ---------------------------------------------------------------
    async def fire_timers(self) -> None:
        """Every tick: send a Due for each user whose deadline passed, on the
        partitions this worker owns that had no traffic for a moment (the
        derived agent decides, in-stream; busy partitions decide in their
        batches)."""
        deadlines = self.deadlines
        wall = now_ms()
        for number in list(deadlines.owned):
            part = deadlines.parts.get(number)
            if part is None or not part.timers:
                continue
            if time.monotonic() - self._batch_seen.get(number, 0.0) < TIMER_HANDOFF_S:
                continue  # the partition has traffic: its batches decide what is due
            until = part.idle_until(wall)
            if until is None:
                continue
            for key in part.pop_due(until):
                await self._send_derived(Due(key.decode(), until))

    async def _follow_model(self) -> None:
        await follow_model(self.settings, self._use_model, self._stopping)

    def _use_model(self, model: Model) -> None:
        """A newly fitted churn model: P(alive) deadlines are computed again."""
        self.model = model
        params, unit = model.params, model.unit_days
        self.engine.churn_model = ChurnModel(params, unit)
        if self.engine.refresh_ms is not None:
            # every profile gets the new model's numbers, spread over minutes
            self.engine.refresh_since_ms = now_ms()
        logger.info(
            "churn model: r=%.4f alpha=%.4f a=%.4f b=%.4f (unit %g days, %d buyers)",
            params.r, params.alpha, params.a, params.b, unit, model.buyers,
        )  # fmt: skip
        if self.deadlines.owned:
            self.deadlines.rebuild(self.deadlines.owned, self.state.items)

    async def _on_rebalanced(self, app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After recovery: rebuild the deadline index of the partitions now owned."""
        events = self.topics.events_name
        assigned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events}
        self.deadlines.rebuild(assigned, self.state.items)
        self.reprojector.assigned(assigned)
        self.recovered = True

    async def _send_derived(self, message: DerivedMessage) -> None:
        await self._send(self.topics.derived_name, message.key.encode(), encode_derived(message))

    def _dead_letter(
        self, topic: str, partition: int, record: Record, error: EventError
    ) -> tuple[Send, Send]:
        """``record`` (of ``topic`` and ``partition``) for the dead-letter
        topic, untouched, with the reason and its source in the headers — by
        reference when it is too big for the producer — and, for when that
        cannot be sent, its form by reference without the value."""
        self.counters.dead_letters += 1
        source = {"topic": topic, "partition": partition, "offset": record.offset}
        logger.info(
            "dead-lettered %s[%d]@%d: %s", topic, partition, record.offset, error,
            extra={**source, "code": error.code},
        )  # fmt: skip
        letter, fallback = dead_letter_sends(
            error, topic, partition, record.offset, record.key, record.value,
            dlq=self.topics.dead_letters_name,
            max_bytes=self.app.conf.producer_max_request_size,
        )  # fmt: skip
        return letter, fallback

    async def flush_projection(self) -> None:
        await self.reprojector.flush(time.monotonic())

    async def _on_shutdown(self, app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._stopping.set()
        await self.health.close()  # before the clients it asks are closed
        await self.committer.drain()
        await self.committer.stop()
        await self.reprojector.flush(time.monotonic())
        await self.projection.close()
