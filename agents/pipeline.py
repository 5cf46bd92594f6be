"""The Faust app: one agent per input topic, a changelog-backed state table,
the Redis projection flushed by a timer, triggers sent to their topics.

The agent only decodes, calls the pure core, writes the table and sends;
every decision lives in :mod:`streams`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event

from agents.deadlines import Deadlines
from agents.model import Model, follow_model, model_fields, model_p_alive_at
from agents.projection import RedisProjection
from agents.settings import Settings
from streams import topics
from streams.derived import (
    Alias,
    DerivedMessage,
    Due,
    Forward,
    Merge,
    ReferralCredit,
    decode_derived,
    encode_derived,
)
from streams.errors import EventError, StateError
from streams.events import Event, Limits, parse_event
from streams.fold import fold_events
from streams.identity import merge_states, on_alias
from streams.policy import DEFAULT_POLICY, Policy
from streams.profile import profile_fields, profile_indexes
from streams.referral import on_referral_credit
from streams.state import (
    STAGE_ERASED,
    UserState,
    apply,
    decode_state,
    encode_state,
    erased_marker,
    evolve,
)
from streams.timed import PAliveAt, next_deadline, run_until
from streams.triggers import Trigger, decide_on_event, encode_trigger

logger = logging.getLogger(__name__)

#: How often staged Redis profiles are flushed, in seconds.
PROJECTION_FLUSH_INTERVAL_S = 0.25
#: How often due deadlines are looked for, in seconds (timer precision).
TIMER_TICK_S = 0.2
#: A partition a batch came from less than this long ago has its due
#: deadlines decided by its batches, in-stream; the timer leaves it alone.
TIMER_HANDOFF_S = 0.25

#: Header names of a dead letter (the value is the original record, untouched).
DLQ_HEADERS = (
    "userpulse.error.code",
    "userpulse.error.path",
    "userpulse.error.message",
    "userpulse.source.topic",
    "userpulse.source.partition",
    "userpulse.source.offset",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Counters:
    """What the worker has done since it started (exposed on /counters/)."""

    events: int = 0
    dead_letters: int = 0
    triggers: int = 0
    timers_fired: int = 0
    send_errors: int = 0
    batches: int = 0
    state_writes: int = 0


class Pipeline:
    """The Faust app of one userpulse worker, configured by ``settings``."""

    def __init__(self, settings: Settings, policy: Policy = DEFAULT_POLICY) -> None:
        self.settings = settings
        self.policy = policy
        self.counters = Counters()
        self.limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=settings.max_future_skew_s * 1000,
        )
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
            store=settings.store,
            datadir=str(settings.data_dir),
            web_port=settings.web_port,
            topic_partitions=settings.partitions,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            autodiscover=False,
            producer_acks=-1,
            # batch the changelog and trigger sends: one request per record costs more
            # than the work that produced it (py-spy: 22 % of the worker in socket writes)
            producer_linger=0.005,
            producer_max_batch_size=256 * 1024,
            # commit on the interval only (2.8 s): Faust's default also commits every
            # 10,000 messages from inside the fetch loop, which stalls the fetcher for
            # a producer flush and a commit round trip (measured: +10 % events/s)
            broker_commit_every=1_000_000,
            # room for several full batches between the fetcher and the agent
            stream_buffer_maxsize=16384,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        self.events_topic = self.app.topic(
            settings.topic(topics.USER_EVENTS),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            **raw,
        )
        self.dlq_topic = self.app.topic(
            settings.topic(topics.DEAD_LETTERS), key_serializer="raw", value_serializer="raw", **raw
        )
        self.trigger_topics = {
            name: self.app.topic(
                settings.topic(name), key_serializer="raw", value_serializer="raw", **raw
            )
            for name in topics.TRIGGER_TOPICS
        }
        self.state = self.app.Table(
            "user-state",
            default=None,
            partitions=settings.partitions,
            help="UserState per user id, orjson bytes",
            **raw,
        )
        self.projection = RedisProjection.from_url(
            settings.redis_url.reveal(), settings.redis_key_prefix
        )
        self.derived_topic = self.app.topic(
            settings.topic(topics.DERIVED),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            **raw,
        )
        self.dlq_topic_name = self.dlq_topic.get_topic_name()
        self.derived_topic_name = self.derived_topic.get_topic_name()
        self.trigger_topic_names = {
            name: topic.get_topic_name() for name, topic in self.trigger_topics.items()
        }
        self.app.agent(self.events_topic, name="user-events")(self.process)
        self.app.agent(self.derived_topic, name="derived")(self.process_derived)
        self.app.timer(PROJECTION_FLUSH_INTERVAL_S, name="redis-projection-flush")(
            self.flush_projection
        )
        self.app.page("/counters/")(self._counters_view())
        self.app.on_before_shutdown.connect(self._on_shutdown)
        self.deadlines = Deadlines(
            settings.partitions, lambda state: next_deadline(state, self.policy, self.p_alive_at)
        )
        #: when a batch last came from each partition (monotonic seconds)
        self._batch_seen: dict[int, float] = {}
        self.app.timer(TIMER_TICK_S, name="deadline-timers")(self.fire_timers)
        #: the churn model's newest parameters (None until `userpulse fit` published some)
        self.model: Model | None = None
        self.p_alive_at: PAliveAt | None = None
        self._stopping = asyncio.Event()
        self.app.task(self._follow_model)
        self.app.on_rebalance_complete.connect(self._on_rebalanced)

    async def process(self, stream: Any) -> None:
        """The user-events agent: validate, apply, persist, project, trigger —
        a batch at a time (see :meth:`process_batch`): up to
        ``USERPULSE_BATCH_MAX_EVENTS`` events, or what arrived within
        ``USERPULSE_BATCH_WAIT_MS``. Faust acknowledges a batch's events
        (their offsets become committable) only after the batch is processed."""
        batch_max = self.settings.batch_max_events
        within = self.settings.batch_wait_ms / 1000
        async for records in stream.take_events(batch_max, within=within):
            await self.process_batch(records)

    async def process_batch(self, records: list[Any]) -> None:
        """Validate every record (dead-lettering the invalid), fold each user's
        events in order (:func:`streams.fold.fold_events`), store each changed
        user once, then decide the deadlines due on the batch's partitions."""
        users: dict[bytes, list[Event]] = {}
        last_record: dict[bytes, Any] = {}
        partitions: dict[int, Any] = {}
        arrived_ms = now_ms()
        advance = self.deadlines.advance
        for record in records:
            try:
                event = parse_event(record.value or b"", now_ms=arrived_ms, limits=self.limits)
                _check_key(record.key, event)
            except EventError as error:
                await self._dead_letter(record, error)
                continue
            key: bytes = record.key
            partition: int = record.message.partition
            advance(partition, event.timestamp_ms)
            users.setdefault(key, []).append(event)
            last_record[key] = record
            partitions[partition] = record
        self.counters.events += sum(len(events) for events in users.values())
        self.counters.batches += 1
        for key, events in users.items():
            record = last_record[key]
            _set_current_event(record)  # the table writes to the record's partition
            old = self._load(key)
            folded = fold_events(old, events, self.policy, self.p_alive_at)
            if folded.changes:
                partition = record.message.partition
                await self._store(
                    key, partition, old, folded.state, folded.triggers, changes=folded.changes
                )
            for message in folded.derived:
                await self._send_derived(message)
        await self._decide_due(partitions)

    async def _decide_due(self, partitions: dict[int, Any]) -> None:
        """Decide, in-stream, the deadlines due on the partitions a batch came
        from (the timer sends a ``Due`` only for partitions without traffic)."""
        wall = now_ms()
        seen_at = time.monotonic()
        stream_clock = self.settings.clock == "stream"
        deadlines = self.deadlines
        for partition, record in partitions.items():
            self._batch_seen[partition] = seen_at
            index = deadlines.timers.get(partition)
            if not index:
                continue
            now = deadlines.stream_time.get(partition, 0) if stream_clock else wall
            due = [key for key, _deadline in index.pop_due(now)]
            if not due:
                continue
            _set_current_event(record)
            for key in due:
                self.counters.timers_fired += 1
                await self._decide_deadlines(key, partition, self._load(key), now)

    async def _decide_deadlines(
        self, key: bytes, partition: int, old: UserState | None, until_ms: int
    ) -> None:
        """Decide ``key``'s deadlines up to ``until_ms``, each at its own time;
        store what changed, or schedule the next deadline again."""
        new, timed = run_until(old, until_ms, self.policy, self.p_alive_at)
        if new is not old:
            await self._store(key, partition, old, new, timed)
        else:
            self.deadlines.schedule(partition, key, old)

    async def process_derived(self, stream: Any) -> None:
        """The derived-messages agent: identity merges, referral credits and
        timer deadlines (see :mod:`streams.derived`)."""
        async for record in stream.events():
            try:
                message = decode_derived(record.value or b"")
            except StateError:
                logger.exception(
                    "skipping malformed derived message at %s[%d]@%d",
                    record.message.topic,
                    record.message.partition,
                    record.message.offset,
                )
                continue
            key: bytes = record.key
            partition: int = record.message.partition
            old = self._load(key)
            if isinstance(message, Due):
                await self._decide_deadlines(key, partition, old, message.until_ms)
            elif isinstance(message, Alias):
                marked, merge = on_alias(old, message, now_ms())
                if marked != old:
                    await self._store(key, partition, old, marked, [])
                await self._send_derived(merge)
            elif isinstance(message, Merge):
                merged = merge_states(old, message, self.policy)
                if merged is not None and merged is not old:
                    cause = message.cause(merged.last_seen_ms)
                    await self._store(
                        key, partition, old, merged, decide_on_event(old, merged, cause)
                    )
            elif isinstance(message, Forward):
                new = apply(old, message.event, self.policy)
                if new is not old:
                    triggers = decide_on_event(old, new, message.event)
                    await self._store(key, partition, old, new, triggers, message.event)
            elif isinstance(message, ReferralCredit):
                credited = on_referral_credit(old, message, self.policy)
                if credited is not old:
                    triggers = decide_on_event(old, credited, message.cause())
                    await self._store(key, partition, old, credited, triggers)

    def _load(self, key: bytes) -> UserState | None:
        raw = self.state.get(key)
        if raw is None:
            return None
        try:
            return decode_state(raw)
        except StateError:
            logger.exception("user-state for %r is unreadable; starting it afresh", key)
            return None

    async def _store(
        self,
        key: bytes,
        partition: int,
        old: UserState | None,
        new: UserState | None,
        triggers: list[Trigger],
        event: Event | None = None,
        *,
        changes: int = 1,
    ) -> None:
        """Persist ``new`` (``None``, or an erasure's marker: the user is
        erased), project it to Redis, schedule its next deadline and send
        ``triggers``. The revision advances by ``changes`` (one per change,
        however many a batch stores at once). The table write needs the
        current event to be one of ``partition``'s."""
        revision = (old.revision if old is not None else 0) + changes
        if new is None:
            user_id = old.user_id if old is not None else key.decode()
            at_ms = event.timestamp_ms if event is not None else now_ms()
            new = erased_marker(user_id, at_ms)
        new = evolve(new, {"revision": revision})
        self.state[key] = encode_state(new)
        self.counters.state_writes += 1
        if new.stage == STAGE_ERASED:
            self.projection.erase(new.user_id, revision)
        elif new.event_count > 0:
            fields = {**profile_fields(new, version=revision), **model_fields(self.model, new)}
            self.projection.stage(new.user_id, revision, fields, profile_indexes(new))
        self.deadlines.schedule(partition, key, new)
        if triggers:
            emitted_at = now_ms()
            for trigger in triggers:
                await self._send(
                    self.trigger_topic_names[trigger.topic],
                    trigger.user_id.encode(),
                    encode_trigger(trigger, emitted_at_ms=emitted_at),
                )
            self.counters.triggers += len(triggers)

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Hand a record to the producer without waiting for its delivery
        (Faust flushes the producer before it commits offsets, so a record
        is delivered before the offset of the event that caused it is
        committed). A failed delivery stops the worker: its offset must not
        be committed."""
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
        partitions this worker owns (the derived agent decides, in-stream)."""
        deadlines = self.deadlines
        for partition, index in list(deadlines.timers.items()):
            if partition not in deadlines.owned:
                continue
            if self.settings.clock == "stream":
                now = deadlines.stream_time.get(partition)
                if now is None:
                    continue
            else:
                now = now_ms()
            if time.monotonic() - self._batch_seen.get(partition, 0.0) < TIMER_HANDOFF_S:
                continue  # the partition has traffic: its batches decide what is due
            for key, _deadline in index.pop_due(now):
                await self._send_derived(Due(key.decode(), now))
                self.counters.timers_fired += 1

    async def _follow_model(self) -> None:
        await follow_model(self.settings, self._use_model, self._stopping)

    def _use_model(self, model: Model) -> None:
        """A newly fitted churn model: P(alive) deadlines are computed again."""
        self.model = model
        params, unit = model.params, model.unit_days
        self.p_alive_at = model_p_alive_at(params, unit)
        logger.info(
            "churn model: r=%.4f alpha=%.4f a=%.4f b=%.4f (unit %g days, %d buyers)",
            params.r, params.alpha, params.a, params.b, unit, model.buyers,
        )  # fmt: skip
        if self.deadlines.owned:
            self.deadlines.rebuild(self.deadlines.owned, self.state.items)

    async def _on_rebalanced(self, app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After recovery: rebuild the deadline index of the partitions now owned."""
        events = self.events_topic.get_topic_name()
        assigned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events}
        self.deadlines.rebuild(assigned, self.state.items)

    async def _send_derived(self, message: DerivedMessage) -> None:
        await self._send(self.derived_topic_name, message.key.encode(), encode_derived(message))

    async def _dead_letter(self, record: Any, error: EventError) -> None:
        message = record.message
        values = (
            error.code,
            error.path,
            error.message,
            message.topic,
            str(message.partition),
            str(message.offset),
        )
        headers = [(name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)]
        await self._send(self.dlq_topic_name, record.key, record.value, headers)
        self.counters.dead_letters += 1
        logger.info(
            "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, error
        )

    async def flush_projection(self) -> None:
        await self.projection.flush(time.monotonic())

    async def _on_shutdown(self, app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._stopping.set()
        await self.projection.flush(time.monotonic())
        await self.projection.close()

    def _counters_view(self) -> Any:
        # Faust calls a page handler as handler(view, request): a plain function.
        async def counters(view: Any, request: Any) -> Any:
            return view.json(
                {
                    "events": self.counters.events,
                    "dead_letters": self.counters.dead_letters,
                    "triggers": self.counters.triggers,
                    "timers_fired": self.counters.timers_fired,
                    "send_errors": self.counters.send_errors,
                    "batches": self.counters.batches,
                    "state_writes": self.counters.state_writes,
                    "timers_pending": self.deadlines.pending,
                    "timer_rebuilds": self.deadlines.rebuilds,
                    "timer_rebuild_running": self.deadlines.rebuilding,
                    "timer_rebuild_s": self.deadlines.last_rebuild_s,
                    "projection_pending": self.projection.pending,
                    "projection_written": self.projection.written,
                    "projection_erased": self.projection.erased,
                    "projection_stale_skipped": self.projection.stale_skipped,
                }
            )

        return counters


def _check_key(key: bytes | None, event: Event) -> None:
    """The record key must be the event's user (or anonymous) id: the table
    is partitioned by it, so another key would put state on the wrong worker."""
    expected = event.key.encode()
    if key != expected:
        shown = key.decode(errors="replace") if key is not None else None
        raise EventError(
            "key_mismatch",
            "$.user_id",
            f"record key {shown!r} must equal the user_id (or anonymous_id) {event.key!r}",
        )


def _set_current_event(record: Any) -> None:
    """Make ``record`` Faust's current event in this task. A table write goes
    to the current event's partition — its RocksDB database and changelog
    partition — so a batch sets, before each user's write, one of that user's
    records (every record of a key is on the key's partition)."""
    _current_event.set(weakref.ref(record))
