"""Workers whose clocks are wrong, one after the other on the same disk,
under a steady producer: a worker 45 minutes behind is SIGKILLed, one 45
minutes ahead takes over and is SIGKILLed, one with the right clock
finishes. On the stream clock every decision follows the events' own
timestamps, so the states and triggers must be exactly the engine's —
nothing lost, nothing applied twice, no trigger id changed by a clock.

The clocks are shifted with libfaketime (the `libfaketime` test
dependency ships it, LD_PRELOAD; monotonic time is left alone). What a
skewed clock does change is documented, not tested here: an event stamped
less than ``USERPULSE_MAX_FUTURE_SKEW_S`` ahead of true time is
`future_timestamp` to a worker whose clock is far enough behind
(docs/events.md: the skew is measured against the worker's clock).
"""

from __future__ import annotations

import importlib.util
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from benchmarks.generator import generate
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, finish, scale
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

NOW_MS = 1_767_225_600_000
EVENTS = scale(4_000, 20_000)
USERS = scale(150, 1_500)
SKEWS_S = (-45 * 60, 45 * 60)


def faketime_env(skew_s: int) -> dict[str, str]:
    """The environment that shifts a process's wall clock by ``skew_s``."""
    spec = importlib.util.find_spec("libfaketime")  # found, not imported
    assert spec is not None and spec.submodule_search_locations, "pip install libfaketime"
    lib = Path(next(iter(spec.submodule_search_locations))) / "vendor/libfaketime/src"
    assert (lib / "libfaketime.so.1").exists(), lib
    return {
        "LD_PRELOAD": str(lib / "libfaketime.so.1"),
        "FAKETIME": f"{skew_s:+d}",
        "DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def test_workers_with_skewed_clocks(
    settings: Settings,
    tmp_path: Path,
    record_report: list[Report],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = replace(settings, clock="stream")
    data = generate(EVENTS, USERS, seed=31, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    producer = SteadyProducer(settings, data.keys, data.values).start()
    worker: Worker | None = None
    seen_skews: list[float] = []
    try:
        for skew in SKEWS_S:
            with monkeypatch.context() as env:
                for name, value in faketime_env(skew).items():
                    env.setenv(name, value)
                worker = Worker(settings, log)  # takes the environment now
            wait_for(
                lambda: counters(settings).get("events", 0) > 0,  # this process's own count
                90,
                worker,
                f"events with a clock {skew:+d} s off",
            )
            started = log.read_text(errors="replace").splitlines()
            stamp = [line for line in started if line.startswith("[20")][-1][1:20]
            seen_skews.append(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - time.time())
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(30)
            worker.stop()
        worker = Worker(settings, log)  # the right clock
        finish(settings, producer, worker)
    finally:
        producer.close()
        if worker is not None:
            assert worker.stop() == 0, worker.tail()
    # the workers' own log stamps show their clocks were off as asked
    for asked, seen in zip(SKEWS_S, seen_skews, strict=True):
        assert abs(seen - asked) < 120, (asked, seen)
    report = verify(
        settings,
        "worker clocks 45 min behind, then 45 min ahead (SIGKILLed), then right",
        data_dir=settings.data_dir,
    )
    record_report.append(report)
    assert not report.failures(), report.failures()
