"""Outages of what a worker depends on, under a steady producer, each on a
stack of the scenario's own: the broker SIGKILLed and restarted on its
disk, Redis frozen (SIGSTOP) and resumed, Redis SIGKILLed and restarted
empty (the local stack's Redis keeps no data). The worker must ride each out —
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
import redis

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from agents.stack.local import Stack
from benchmarks.generator import generate
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, finish, scale, settled
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

NOW_MS = 1_767_225_600_000
EVENTS = scale(4_000, 20_000)
USERS = scale(200, 2_000)
BROKER_DOWN_S = scale(10, 55)
REDIS_FROZEN_S = scale(8, 30)
REDIS_DOWN_S = scale(3, 30)
#: warning and error lines a broker outage may write (one per kind a minute)
MAX_OUTAGE_LINES = 150


def _run(settings: Settings, tmp_path: Path, outage: Callable[[], None]) -> Worker:
    data = generate(EVENTS, USERS, seed=13, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    producer = SteadyProducer(settings, data.keys, data.values).start()
    try:
        wait_for(lambda: counters(settings).get("events", 0) > 0, 90, worker, "first events")
        outage()
        finish(settings, producer, worker)
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
    log = (tmp_path / "worker.log").read_text(errors="replace").splitlines()
    loud = [line for line in log if "] [ERROR] " in line or "] [WARNING] " in line]
    # one line per kind of trouble a minute, not one per retry (130,000 before)
    assert len(loud) < MAX_OUTAGE_LINES, "\n".join(loud[:50])
    report = verify(
        settings,
        f"broker SIGKILLed, down {BROKER_DOWN_S} s ({len(loud)} warning/error lines)",
        data_dir=settings.data_dir,
    )
    record_report.append(report)
    assert not report.failures(), report.failures()


def _wait_profiles_current(settings: Settings, worker: Worker) -> None:
    """Until the verifier's Redis view has nothing to report."""

    def profiles_current() -> bool:
        views = verify(settings, "Redis caught up").views
        return not next(v for v in views if v.name == "redis").failures

    wait_for(profiles_current, 120, worker, "every profile current in Redis")


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
        _wait_profiles_current(settings, worker)  # the projection catches up on its own
    finally:
        assert worker.stop() == 0, worker.tail()
    report = verify(settings, f"Redis frozen {REDIS_FROZEN_S} s", data_dir=settings.data_dir)
    record_report.append(report)
    assert not report.failures(), report.failures()


def test_redis_restarted_empty(
    own_stack: Stack, own_settings: Settings, tmp_path: Path, record_report: list[Report]
) -> None:
    settings = replace(own_settings, clock="stream")
    client = redis.Redis.from_url(settings.redis_url.reveal())
    sentinel = f"{settings.redis_key_prefix}sentinel"  # a key no worker writes
    holder: list[SteadyProducer] = []

    def outage() -> None:
        # after the last event: no user changes again, every profile must come back
        # from the worker's comparison of its state with the emptied Redis
        holder[0].wait(300)
        wait_for(lambda: settled(settings), 240, worker, "all in")
        _wait_profiles_current(settings, worker)
        client.set(sentinel, "before the restart")
        pid = own_stack.live_pid("redis")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(REDIS_DOWN_S)  # the outage itself
        own_stack.up()
        assert not client.exists(sentinel)  # Redis came back without its data

    data = generate(EVENTS, USERS, seed=13, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    holder.append(SteadyProducer(settings, data.keys, data.values).start())
    try:
        wait_for(lambda: counters(settings).get("events", 0) > 0, 90, worker, "first events")
        outage()
        _wait_profiles_current(settings, worker)
        restaged = counters(settings)["projection_restaged"]
        assert restaged >= USERS * 0.9, restaged  # (some users have no profile of their own)
    finally:
        holder[0].close()
        client.close()
        assert worker.stop() == 0, worker.tail()
    report = verify(
        settings,
        f"Redis SIGKILLed after the last event, restarted empty after {REDIS_DOWN_S} s",
        data_dir=settings.data_dir,
    )
    record_report.append(report)
    assert not report.failures(), report.failures()
