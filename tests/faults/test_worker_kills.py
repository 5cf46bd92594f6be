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

import random
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from agents.backtest.run import Backtest
from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from benchmarks.generator import generate
from streams import topics
from streams.userstate import DEDUP_WINDOW
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, finish, probes, scale
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

EVENTS = scale(6_000, 30_000)
USERS = scale(120, 600)
KILLS = scale(5, 12)
NOW_MS = 1_767_225_600_000  # the generator's anchor: 2026-01-01T00:00:00Z


def test_kills_lose_nothing_and_apply_nothing_twice(
    settings: Settings, tmp_path: Path, record_report: list[Report]
) -> None:
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
    producer = SteadyProducer(settings, data.keys, data.values)  # about 300 events/s
    rng = random.Random(11)
    log = tmp_path / "worker.log"
    worker = Worker(settings, log)
    producer.start()
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
        finish(settings, producer, worker, produce_s=120)
    finally:
        worker.stop()
        producer.close()

    report = verify(settings, f"worker SIGKILLed {kills}x", data_dir=settings.data_dir)
    record_report.append(report)
    assert not report.failures(), report.failures()
    by_name = {view.name: view for view in report.views}
    assert by_name["changelog"].expected == USERS
    assert by_name["triggers"].expected == len(expected_triggers)

    # the same worker restored on an empty disk: everything from the changelog
    restored = replace(settings, data_dir=tmp_path / "empty-disk")
    worker = Worker(restored, log)
    keys, values = probes(restored, max(orjson.loads(v)["timestamp"] for v in data.values), "r")
    sender = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for key, value in zip(keys, values, strict=True):
        sender.send(events_topic, key=key, value=value)
    sender.close()
    try:
        wait_for(
            lambda: counters(restored).get("events", 0) >= len(keys),
            120,
            worker,
            "the restored worker applying an event on every partition",
        )
    finally:
        assert worker.stop() == 0, worker.tail()
    report = verify(
        restored, "restored on an empty disk after the kills", data_dir=restored.data_dir
    )
    record_report.append(report)
    assert not report.failures(), report.failures()
    assert {v.name: v.found for v in report.views}["rocksdb = changelog"] == USERS + len(keys)
