"""The fault suite's verifier: what every view of a run must hold, recomputed
from the input alone (docs/reliability.md, "The fault suite").

It reads the input topic to its end, runs the records through the pure
engine exactly as the back-test does (:class:`agents.backtest.run.Backtest`,
stream clock, the worker's partitioning), and checks each view a worker
writes against that:

- **changelog** — every user's latest state: users lost, events applied
  twice (an event count above the engine's) or lost (below), states that
  differ otherwise;
- **rocksdb** — the worker's local tables (read only with the worker
  stopped): the same checks, and equal to the changelog, revisions and
  input offsets included (the changelog never behind local state);
- **redis** — every profile hash: missing, stale (its version below the
  changelog state's revision), fields that differ from the changelog state;
- **triggers** — the trigger topics read ``read_committed``: ids missing,
  ids the engine does not decide, payloads that differ; duplicates by id
  (same payload) are counted, not failures (at-least-once, deterministic
  ids);
- **dead letters** — every rejected input record in the dead-letter topic,
  by source offset: missing ones and wrong codes; duplicates counted.

:meth:`Report.table` prints one row per view; :meth:`Report.failures` lists
what breaks the guarantee (everything but counted duplicates).
"""

from __future__ import annotations

import glob
import heapq
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
import rocksdict
from kafka import KafkaConsumer, TopicPartition

from agents.backtest.run import Backtest
from agents.kafka.changelog import changelog_topic
from agents.kafka.deadletters import DLQ_HEADERS, dlq_topic
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.codec import decode_state
from streams.contract import Limits
from streams.profile import mirrored, profile_fields
from streams.triggers import encode_trigger
from streams.userstate import UserState

#: state fields the worker and the back-test do not share: the revision
#: (idle deadlines are a change of their own on a live worker) and the input
#: offsets (Kafka's in one, the back-test's own in the other)
NOT_COMPARED = ("revision", "events_offset", "derived_offset")
_CODE, _SOURCE_PARTITION, _SOURCE_OFFSET = DLQ_HEADERS[0], DLQ_HEADERS[4], DLQ_HEADERS[5]
EXAMPLES = 5


@dataclass(frozen=True)
class Raw:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_to_end(
    bootstrap: str, names: Iterable[str], *, timeout_s: float = 120.0, **options: Any
) -> list[Raw]:
    """Every record of ``names`` up to the end offsets as of the call, each
    partition in offset order (``options``: more consumer options, e.g.
    ``isolation_level="read_committed"``)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        client_id="userpulse-verifier",
        **options,
    )
    try:
        parts = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records: list[Raw] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {sorted(set(names))} took over {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    if m.offset < end[TopicPartition(m.topic, m.partition)]:
                        records.append(
                            Raw(
                                m.topic,
                                m.partition,
                                m.offset,
                                m.timestamp,
                                m.key,
                                m.value,
                                dict(m.headers or []),
                            )
                        )
        return records
    finally:
        consumer.close()


def comparable(state: UserState) -> dict[str, Any]:
    """A state as the worker and the back-test agree on it."""
    return {n: getattr(state, n) for n in state.__slots__ if n not in NOT_COMPARED}


def local_states(data_dir: Path) -> dict[str, UserState]:
    """Every state in a stopped worker's RocksDB tables."""
    found: dict[str, UserState] = {}
    for path in sorted(glob.glob(str(data_dir / "**" / "*user-state*.db"), recursive=True)):
        db = rocksdict.Rdict(path, options=rocksdict.Options(raw_mode=True))
        try:
            for key, value in db.items():
                if not key.startswith(b"__faust"):
                    state = decode_state(value)
                    found[state.user_id] = state
        finally:
            db.close()
    return found


@dataclass
class View:
    """One view's check: counts, and a few examples of each problem."""

    name: str
    expected: int = 0
    found: int = 0
    lost: int = 0
    applied_twice: int = 0
    missing: int = 0
    stale: int = 0
    differ: int = 0
    duplicates: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, what: str, detail: Any) -> None:
        setattr(self, what, getattr(self, what) + 1)
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{what}: {detail}")

    @property
    def failures(self) -> int:
        return self.lost + self.applied_twice + self.missing + self.stale + self.differ


@dataclass
class Report:
    scenario: str
    events: int
    views: list[View]

    def failures(self) -> list[str]:
        return [
            f"{v.name}: {v.failures} problems ({'; '.join(v.examples)})"
            for v in self.views
            if v.failures
        ]

    def table(self) -> str:
        head = ("view", "expected", "found", "lost", "twice", "missing", "stale", "differ", "dup")
        rows = [
            (
                v.name,
                *(
                    f"{n:,}"
                    for n in (
                        v.expected,
                        v.found,
                        v.lost,
                        v.applied_twice,
                        v.missing,
                        v.stale,
                        v.differ,
                        v.duplicates,
                    )
                ),
            )
            for v in self.views
        ]
        widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
        lines = [f"{self.scenario}: {self.events:,} input records"]
        for row in (head, *rows):
            lines.append("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
        return "\n".join(lines)


class Expected:
    """What the engine decides for the input topic's records."""

    def __init__(self, settings: Settings, records: list[Raw], now_ms: int | None = None) -> None:
        limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=settings.max_future_skew_s * 1000,
        )
        self.backtest = Backtest(
            partitions=settings.partitions, keep_triggers=True, now_ms=now_ms, limits=limits
        )
        self.rejected: dict[tuple[int, int], str] = {}
        self.backtest.on_dead_letter = lambda letter, origin: self.rejected.__setitem__(
            origin, letter.error.code
        )
        by_partition: dict[int, list[Raw]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r)
        # each partition in offset order, the partitions interleaved by the time
        # the records were sent (the order a live worker saw them, roughly)
        ordered = heapq.merge(*by_partition.values(), key=lambda r: r.timestamp)
        for r in ordered:
            self.backtest.feed_raw(r.key, r.value or b"", origin=(r.partition, r.offset))
        self.backtest.finish()
        self.states = {s.user_id: s for s in self.backtest.states.values()}
        self.triggers = {t.trigger_id: t for t in self.backtest.kept or []}


def check_states(name: str, want: dict[str, UserState], got: dict[str, UserState]) -> View:
    view = View(name, expected=len(want), found=len(got))
    for user, state in want.items():
        have = got.get(user)
        if have is None:
            view.note("lost", f"user {user}")
        elif have.event_count > state.event_count:
            view.note(
                "applied_twice", f"{user}: {have.event_count} events, {state.event_count} sent"
            )
        elif have.event_count < state.event_count:
            view.note("lost", f"{user}: {have.event_count} events, {state.event_count} sent")
        elif comparable(have) != comparable(state):
            diff = sorted(k for k, v in comparable(state).items() if comparable(have)[k] != v)
            view.note("differ", f"{user}: {', '.join(diff)}")
    for user in got.keys() - want.keys():
        view.note("differ", f"{user}: a state the input does not make")
    return view


def check_local(changelog: dict[str, UserState], local: dict[str, UserState]) -> View:
    view = check_states("rocksdb", changelog, local)
    view.name = "rocksdb = changelog"
    for user, state in changelog.items():  # revisions and offsets too
        have = local.get(user)
        if have is not None and have != state and comparable(have) == comparable(state):
            view.note("stale", f"{user}: revision {have.revision} local, {state.revision} logged")
    return view


def check_redis(settings: Settings, changelog: dict[str, UserState]) -> View:
    view = View("redis", expected=len(changelog))
    client = redis.Redis.from_url(settings.redis_url.reveal())
    try:
        users = list(changelog.values())
        with client.pipeline(transaction=False) as pipe:
            for state in users:
                pipe.hgetall(profile_key(settings.redis_key_prefix, state.user_id))
            hashes = pipe.execute()
    finally:
        client.close()
    for state, raw in zip(users, hashes, strict=True):
        stored = {k.decode(): v.decode() for k, v in raw.items()}
        if not stored:
            view.note("missing", f"no profile of {state.user_id}")
            continue
        view.found += 1
        if int(stored.get("version", -1)) < state.revision:
            view.note(
                "stale", f"{state.user_id}: version {stored.get('version')} < {state.revision}"
            )
            continue
        want = profile_fields(state, version=state.revision)
        diff = sorted(k for k, v in want.items() if stored.get(k) != v)
        if diff:
            view.note("differ", f"{state.user_id}: {', '.join(diff)}")
    return view


def check_triggers(settings: Settings, expected: dict[str, Any]) -> View:
    names = [settings.topic(t) for t in topics.TRIGGER_TOPICS]
    records = read_to_end(settings.kafka_bootstrap, names, isolation_level="read_committed")
    view = View("triggers", expected=len(expected))
    delivered: Counter[str] = Counter()
    for record in records:
        doc = orjson.loads(record.value or b"null")
        trigger_id = doc["trigger_id"]
        delivered[trigger_id] += 1
        trigger = expected.get(trigger_id)
        if trigger is None:
            view.note("differ", f"{trigger_id}: not a trigger of the input")
            continue
        want = orjson.loads(encode_trigger(trigger, emitted_at_ms=0))
        doc["emitted_at"] = want["emitted_at"]
        if doc != want and delivered[trigger_id] == 1:
            diff = sorted(k for k in want if doc.get(k) != want[k])
            view.note("differ", f"{trigger_id}: {', '.join(diff)}")
    view.found = len(delivered)
    view.duplicates = sum(delivered.values()) - len(delivered)
    for trigger_id in expected.keys() - delivered.keys():
        view.note("missing", trigger_id)
    return view


def check_dead_letters(settings: Settings, rejected: dict[tuple[int, int], str]) -> View:
    view = View("dead letters", expected=len(rejected))
    seen: Counter[tuple[int, int]] = Counter()
    for record in read_to_end(settings.kafka_bootstrap, [dlq_topic(settings)]):
        h = record.headers
        if _SOURCE_PARTITION not in h:
            continue  # a dead letter of an internal topic
        source = (int(h[_SOURCE_PARTITION]), int(h[_SOURCE_OFFSET]))
        seen[source] += 1
        code = rejected.get(source)
        if code is None:
            view.note("differ", f"{source}: dead-lettered, but the engine applies it")
        elif seen[source] == 1 and h.get(_CODE, b"").decode() != code:
            view.note("differ", f"{source}: code {h.get(_CODE)!r}, the engine says {code}")
    view.found = len(seen)
    view.duplicates = sum(seen.values()) - len(seen)
    for source in rejected.keys() - seen.keys():
        view.note("missing", f"record {source} neither applied nor dead-lettered")
    return view


def verify(
    settings: Settings,
    scenario: str,
    *,
    data_dir: Path | None = None,
    check_profiles: bool = True,
    now_ms: int | None = None,
) -> Report:
    """Every view of ``settings``' environment against the engine's reading
    of its input topic. ``data_dir``: also check a stopped worker's RocksDB.
    ``now_ms``: the wall clock the worker validated events against, with its
    settings' skew (None: none — no event is in the future, as for history)."""
    inputs = read_to_end(settings.kafka_bootstrap, [settings.topic(topics.USER_EVENTS)])
    expected = Expected(settings, inputs, now_ms)
    latest: dict[bytes, bytes | None] = {}
    for record in read_to_end(settings.kafka_bootstrap, [changelog_topic(settings)]):
        if record.key is not None:
            latest[record.key] = record.value
    changelog = {}
    for raw in latest.values():
        if raw is not None:
            state = decode_state(raw)
            changelog[state.user_id] = state
    live = {u: s for u, s in changelog.items() if mirrored(s)}
    views = [check_states("changelog", expected.states, changelog)]
    if data_dir is not None:
        views.append(check_local(changelog, local_states(data_dir)))
    if check_profiles:
        views.append(check_redis(settings, live))
    views.append(check_triggers(settings, expected.triggers))
    views.append(check_dead_letters(settings, expected.rejected))
    return Report(scenario, len(inputs), views)
