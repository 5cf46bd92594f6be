"""Outages of what a worker depends on, under a steady producer, each on a
stack of the scenario's own: the broker SIGKILLed and restarted on its
disk, Redis frozen (SIGSTOP) and resumed. The worker must ride each out —
no restart, nothing lost or applied twice, every trigger delivered, every
profile current once Redis answers again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from agents.stack.local import Stack
from benchmarks.generator import generate
from streams import topics
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, committed_everything, scale
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

NOW_MS = 1_767_225_600_000
EVENTS = scale(4_000, 20_000)
USERS = scale(200, 2_000)
BROKER_DOWN_S = scale(10, 55)
REDIS_FROZEN_S = scale(8, 30)


def _run(settings: Settings, tmp_path: Path, outage: Callable[[], None]) -> Worker:
    data = generate(EVENTS, USERS, seed=13, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    producer = SteadyProducer(settings, data.keys, data.values).start()
    try:
        wait_for(lambda: counters(settings).get("events", 0) > 0, 90, worker, "first events")
        outage()
        producer.wait(300)
        wait_for(
            lambda: committed_everything(settings, settings.topic(topics.USER_EVENTS)),
            240,
            worker,
            "every record committed",
        )
        assert worker.proc.poll() is None, worker.tail()
    finally:
        producer.close()
    return worker


def test_broker_killed_and_restarted(
    own_stack: Stack, own_settings: Settings, tmp_path: Path, record_report: list[Report]
) -> None:
    settings = replace(own_settings, clock="stream")

    def outage() -> None:
        pid = own_stack.live_pid("kafka")
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        time.sleep(BROKER_DOWN_S)  # the outage itself
        own_stack.up()

    worker = _run(settings, tmp_path, outage)
    assert worker.stop() == 0, worker.tail()
    report = verify(
        settings, f"broker SIGKILLed, down {BROKER_DOWN_S} s", data_dir=settings.data_dir
    )
    record_report.append(report)
    assert not report.failures(), report.failures()


def test_redis_frozen(
    own_stack: Stack, own_settings: Settings, tmp_path: Path, record_report: list[Report]
) -> None:
    settings = replace(own_settings, clock="stream")

    def outage() -> None:
        pid = own_stack.live_pid("redis")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(REDIS_FROZEN_S)  # the outage itself
        finally:
            os.kill(pid, signal.SIGCONT)

    worker = _run(settings, tmp_path, outage)
    try:
        # the projection catches up on its own once Redis answers
        def profiles_current() -> bool:
            views = verify(settings, "Redis caught up").views
            return not next(v for v in views if v.name == "redis").failures

        wait_for(
            profiles_current,
            120,
            worker,
            "every profile current in Redis",
        )
    finally:
        assert worker.stop() == 0, worker.tail()
    report = verify(settings, f"Redis frozen {REDIS_FROZEN_S} s", data_dir=settings.data_dir)
    record_report.append(report)
    assert not report.failures(), report.failures()
