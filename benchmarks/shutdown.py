"""Graceful shutdown and rebalance, timed on a worker under load.

A data set is pre-loaded into a topic. Each round starts a worker (stream
clock, as a backfill) on its own consumer group and, once it has applied
a quarter of the events — busy, with batches in flight — sends SIGTERM and
times SIGTERM → exit, and checks what the stop left: its exit code, and how
many applied records were not committed (a second worker on the same group
and data dir finishes the topic and counts what it finds already applied —
``redelivered``: 0 means the stop committed everything it had applied).
Then, with that second worker still busy, a third joins the group: the time
until both answer ``GET /health/ready`` with 200 again is the rebalance
(partitions moved, their tables recovered from the changelog).

Run from the repository root against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.shutdown [--events 400000 --users 40000 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from benchmarks import harness
from benchmarks.harness import Bench, BenchError, WorkerProcess, log
from benchmarks.pipeline import Prepared, add_size_arguments, prepare

DEFAULT_EVENTS = 400_000
DEFAULT_USERS = 40_000


def ready(worker: WorkerProcess) -> bool:
    url = f"http://127.0.0.1:{worker.settings.web_port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait(predicate: Any, timeout_s: float, what: str, *workers: WorkerProcess) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        for worker in workers:
            worker.check_alive(what)
        if predicate():
            return time.perf_counter() - started
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout_s:.0f} s: {what}")


def events_of(worker: WorkerProcess) -> int:
    try:
        return int(worker.counters(timeout_s=2)["events"])
    except (OSError, KeyError, ValueError):
        return 0


def one_round(bench: Bench, prepared: Prepared, n: int) -> dict[str, Any]:
    settings = bench.settings(f"shutdown-{n}", prefix=prepared.prefix, clock="stream")
    first = bench.start_worker(settings, f"first-{n}")
    quarter = prepared.events // 4
    wait(lambda: events_of(first) >= quarter, 600, "a quarter of the events applied", first)
    applied_before = events_of(first)
    first.proc.send_signal(signal.SIGTERM)
    stopped = time.perf_counter()
    code = first.proc.wait(timeout=120)
    stop_s = time.perf_counter() - stopped
    first.stop()
    # the same group and data dir again: what the stop did not commit comes again
    second = bench.start_worker(settings, f"second-{n}")
    wait(lambda: events_of(second) > 0, 300, "the restarted worker applies events", second)
    wait(lambda: ready(second), 300, "the restarted worker ready", second)
    third = bench.start_worker(
        bench.settings(f"shutdown-{n}", prefix=prepared.prefix, clock="stream",
                       data_dir=bench.workdir / f"third-{n}"),
        f"third-{n}",
    )  # fmt: skip
    rebalance_s = wait(
        lambda: ready(second) and ready(third) and int(third.counters()["events"]) > 0,
        300,
        "both workers ready after the third joined, the third applying events",
        second,
        third,
    )
    redelivered = int(second.counters()["redelivered"])
    second.stop()
    third.stop()
    return {
        "applied_before_sigterm": applied_before,
        "sigterm_to_exit_s": round(stop_s, 3),
        "exit_code": code,
        "redelivered_after_restart": redelivered,
        "rebalance_to_ready_s": round(rebalance_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser, DEFAULT_EVENTS, DEFAULT_USERS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    load_start = harness.load_average()
    with Bench.open() as bench:
        prepared = prepare(bench, args.events, args.users, seed=args.seed, name="shutdown")
        rounds = []
        for n in range(args.rounds):
            result = one_round(bench, prepared, n)
            log(f"round {n + 1}: {json.dumps(result)}")
            rounds.append(result)
        doc = harness.envelope(
            "shutdown", bench, load_start, events=prepared.events, users=prepared.users
        )
        doc["rounds"] = rounds
        path = harness.write_result("shutdown", doc)
    rows = [
        (
            i + 1,
            r["applied_before_sigterm"],
            r["sigterm_to_exit_s"],
            r["exit_code"],
            r["redelivered_after_restart"],
            r["rebalance_to_ready_s"],
        )
        for i, r in enumerate(rounds)
    ]
    print(
        harness.table(
            f"Graceful shutdown and rebalance — {prepared.events:,} events, "
            f"{prepared.users:,} users",
            ("round", "applied", "SIGTERM → exit s", "exit", "redelivered", "rebalance → ready s"),
            rows,
        )
    )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
