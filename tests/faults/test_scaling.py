"""Workers added and removed under a steady producer: one worker, a second
joins its group (partitions move to it, restored from the changelog), a
third joins, the first leaves (SIGTERM) and the third takes its share, then
the second is SIGKILLed.
Every rebalance hands partitions over mid-stream; nothing may be lost or
applied twice, and every trigger must arrive.

Local RocksDB is not compared: after partitions moved, a worker's disk
holds the states of partitions it no longer owns, as of when it gave them
up (the changelog is the truth; the next owner restores from it).
"""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from agents.stack.network import free_port
from benchmarks.generator import generate
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, finish, scale
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

NOW_MS = 1_767_225_600_000
EVENTS = scale(6_000, 30_000)
USERS = scale(300, 3_000)


def owns_inputs(log: Path) -> bool:
    """Does the worker's last assignment (Faust's table in its log) include
    input partitions?"""
    lines = log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if "Setting newly assigned partitions" in line]
    if not starts:
        return False
    table = lines[starts[-1] + 1 : starts[-1] + 12]
    return any("-user-events " in line and "{" in line for line in table)


def test_workers_added_and_removed_under_load(
    settings: Settings, tmp_path: Path, record_report: list[Report]
) -> None:
    settings = replace(settings, clock="stream")
    data = generate(EVENTS, USERS, seed=17, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)

    def member(name: str) -> tuple[Settings, Worker]:
        own = replace(settings, data_dir=tmp_path / f"data-{name}", web_port=free_port())
        return own, Worker(own, tmp_path / f"worker-{name}.log")

    a_settings, a = member("a")
    workers = [a]
    # ~300 events/s, holding after each third until the next member owns partitions
    thirds = (len(data.keys) // 3, 2 * len(data.keys) // 3)
    producer = SteadyProducer(settings, data.keys, data.values, holds=thirds).start()
    try:
        wait_for(lambda: counters(a_settings).get("events", 0) > 0, 90, a, "a's first events")
        b_settings, b = member("b")
        workers.append(b)
        wait_for(lambda: owns_inputs(b.log), 120, b, "b taking partitions")
        producer.release()
        wait_for(lambda: counters(b_settings).get("events", 0) > 0, 120, b, "b's first events")
        c_settings, c = member("c")  # joins; Faust's sticky assignor may give it nothing yet
        workers.append(c)
        wait_for(lambda: "batches" in counters(c_settings), 90, c, "c's web port")
        assert a.stop() == 0, a.tail()  # leaves the group gracefully: c takes a's share
        wait_for(lambda: owns_inputs(c.log), 120, c, "c taking partitions")
        producer.release()
        wait_for(lambda: counters(c_settings).get("events", 0) > 0, 120, c, "c's first events")
        b.proc.send_signal(signal.SIGKILL)  # leaves it by crashing
        b.proc.wait(30)
        finish(settings, producer, c, "every record committed by the last worker")
    finally:
        producer.close()
        for worker in workers:
            worker.stop()

    report = verify(settings, "workers added (2) and removed (SIGTERM, SIGKILL) under load")
    record_report.append(report)
    assert not report.failures(), report.failures()
    assert {v.name: v.found for v in report.views}["changelog"] == USERS
