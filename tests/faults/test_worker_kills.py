"""A worker SIGKILLed again and again while a producer keeps sending
(docs/reliability.md): no event lost, none applied twice, every trigger
delivered at least once with its id, the changelog and local RocksDB equal.

The input is the benchmark generator's mix on the stream clock (so the
expected states and triggers are those of the back-test over the same
records), with users busy enough to have far more events since the last
commit than the window of recent event ids. The worker is killed at random
moments (seeded), at least five times, restarted on the same disk each
time; then the verifier reads every view and compares it with the engine's.
"""

from __future__ import annotations

import glob
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from agents.backtest.run import Backtest
from agents.kafka.admin import ensure_topics
from agents.kafka.changelog import read_states
from agents.kafka.reader import collect
from agents.settings import Settings
from benchmarks.generator import generate
from streams import topics
from streams.codec import decode_state
from streams.triggers import encode_trigger
from streams.userstate import DEDUP_WINDOW, UserState
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e

EVENTS = 6_000
USERS = 120
KILLS = 5
NOW_MS = 1_767_225_600_000  # the generator's anchor: 2026-01-01T00:00:00Z


def comparable(state: UserState) -> dict[str, Any]:
    """A state as the worker and the back-test agree on it: all but the
    revision (idle deadlines are a change of their own live) and the offsets
    (Kafka's in one, the back-test's own in the other)."""
    ignored = ("revision", "events_offset", "derived_offset")
    return {name: getattr(state, name) for name in state.__slots__ if name not in ignored}


def committed_everything(settings: Settings, topic: str) -> bool:
    """Has the worker's group committed every record of ``topic``?"""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,  # only read its committed offsets: never joins
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = consumer.end_offsets(parts)
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()


def local_states(data_dir: Path) -> dict[str, UserState]:
    """Every state in the worker's RocksDB databases (the worker stopped)."""
    found: dict[str, UserState] = {}
    for path in sorted(glob.glob(str(data_dir / "**" / "*user-state*.db"), recursive=True)):
        db = rocksdict.Rdict(path, options=rocksdict.Options(raw_mode=True))
        try:
            for key, value in db.items():
                if key.startswith(b"__faust"):
                    continue
                state = decode_state(value)
                found[state.user_id] = state
        finally:
            db.close()
    return found


def test_kills_lose_nothing_and_apply_nothing_twice(settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, clock="stream")
    data = generate(EVENTS, USERS, seed=7, partitions=settings.partitions, now_ms=NOW_MS)
    per_user = Counter(data.keys)
    assert max(per_user.values()) > 10 * DEDUP_WINDOW  # busy users, well past the window

    # what the engine says the records must give
    predicted = Backtest(partitions=settings.partitions, keep_triggers=True)
    for key, value in zip(data.keys, data.values, strict=True):
        predicted.feed_raw(key, value)
    predicted.finish()
    assert predicted.dead_letters == 0
    expected_triggers = {t.trigger_id: t for t in predicted.kept or []}
    assert len(expected_triggers) > 100

    ensure_topics(settings)
    events_topic = settings.topic(topics.USER_EVENTS)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    sent = threading.Event()

    def produce() -> None:  # a steady producer: about 300 events/s
        for start in range(0, EVENTS, 60):
            for i in range(start, min(start + 60, EVENTS)):
                producer.send(events_topic, key=data.keys[i], value=data.values[i])
            producer.flush()
            time.sleep(0.2)
        sent.set()

    rng = random.Random(11)
    log = tmp_path / "worker.log"
    thread = threading.Thread(target=produce, daemon=True)
    worker = Worker(settings, log)
    thread.start()
    kills = 0
    try:
        while kills < KILLS:
            wait_for(lambda: "batches" in counters(settings), 90, worker, "the worker's web port")
            time.sleep(rng.uniform(0.5, 4.0))  # during recovery, catch-up or steady traffic
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(30)
            worker.stop()
            kills += 1
            worker = Worker(settings, log)
        assert sent.wait(120), "the producer did not finish"
        wait_for(
            lambda: committed_everything(settings, events_topic),
            240,
            worker,
            "every record committed",
        )
        assert worker.proc.poll() is None, worker.tail()
    finally:
        worker.stop()
        producer.close()

    # the changelog: every user's state exactly as the engine computes it
    changelog = {s.user_id: s for s in read_states(settings, timeout_s=60)}
    want = {s.user_id: comparable(s) for s in predicted.states.values()}
    got = {user: comparable(s) for user, s in changelog.items()}
    lost = {u for u in want if u not in got}
    counts = {u: (got[u]["event_count"], want[u]["event_count"]) for u in want if u in got}
    twice = {u: c for u, c in counts.items() if c[0] > c[1]}
    short = {u: c for u, c in counts.items() if c[0] < c[1]}
    assert not lost and not twice and not short, (lost, twice, short)
    assert got == want

    # local RocksDB: equal to the changelog, revisions and offsets included
    assert local_states(settings.data_dir) == changelog

    # the triggers: every one delivered, duplicates (same id, same payload) only
    names = [settings.topic(t) for t in topics.TRIGGER_TOPICS]
    records = collect(
        settings.kafka_bootstrap,
        names,
        lambda rs: {orjson.loads(r.value)["trigger_id"] for r in rs} >= set(expected_triggers),
        timeout_s=60,
    )
    delivered = Counter(orjson.loads(r.value)["trigger_id"] for r in records)
    missing = set(expected_triggers) - set(delivered)
    unexpected = set(delivered) - set(expected_triggers)
    assert not missing and not unexpected, (sorted(missing)[:10], sorted(unexpected)[:10])
    for record in records:
        doc = orjson.loads(record.value)
        want_doc = orjson.loads(
            encode_trigger(expected_triggers[doc["trigger_id"]], emitted_at_ms=0)
        )
        doc["emitted_at"] = want_doc["emitted_at"]
        assert doc == want_doc
    duplicates = sum(delivered.values()) - len(delivered)
    print(
        f"{kills} kills: {EVENTS} events, {len(changelog)} users, lost 0, applied twice 0; "
        f"{len(expected_triggers)} triggers, missing 0, duplicates {duplicates}"
    )
