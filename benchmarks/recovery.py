"""Recovery: how fast a worker gets the state of a partition set back after
it was killed (SIGKILL — nothing flushed, nothing committed on the way out).

On the state benchmark's processed data set (1,000,000 users by default, one
worker owning all partitions):

  (a) local: the worker is restarted with the same data dir — RocksDB has the
      state, Faust replays the changelog only past the offset it persisted;
  (b) changelog: the worker is restarted with an empty data dir — the whole
      state is rebuilt from ``{app id}-user-state-changelog``.

Each is measured from the new process's start to the worker answering
``/counters/`` AND having caught up: one probe event per partition, each for a
new user, sent right after the start, must come back as its ``stage_changed``
trigger on ``triggers.lifecycle`` (Faust processes no event before its tables
are recovered). Users/s = users in the partition set / that time.

Before each restart the benchmark waits until the killed member has left the
consumer group (the session timeout, 10 s here) and reports that wait apart:
it is Kafka's failure detection, not state recovery. A third line, a fresh
worker on an empty topic with no state at all, is the fixed start-up cost
(Python imports, Faust start, group join) that every restart pays.

Run from the repository root against a running stack (it builds the state
first, as benchmarks.state does):

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.recovery [--users 1000000 --events 2000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from agents.settings import Settings
from benchmarks import harness
from benchmarks.harness import Bench, GroupOffsets, TriggerWatch, WorkerProcess, log
from benchmarks.pipeline import add_size_arguments
from benchmarks.state import DEFAULT_EVENTS, DEFAULT_USERS, StateRun
from benchmarks.state import measure as measure_state
from streams import topics


def start_and_time(
    bench: Bench, settings: Settings, label: str
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Start a worker with ``settings`` and time it to /counters/ and to
    having processed a new user's event on every partition."""
    watch = TriggerWatch(settings.kafka_bootstrap, settings.topic(topics.TRIGGERS_LIFECYCLE))
    try:
        worker = bench.start_worker(settings, label)
        ids = harness.send_probes(
            settings.kafka_bootstrap,
            settings.topic(topics.USER_EVENTS),
            harness.probe_keys(f"{bench.tag}-{label}", settings.partitions),
            f"{bench.tag}-{label}",
        )
        answered = harness.wait_until(worker.answers, 600, "the worker's /counters/", [worker])
        caught_up = harness.wait_for_triggers(watch, ids, 1800, [worker])
        indexed = harness.wait_until(
            lambda: _deadlines_indexed(worker), 1800, "the deadline index rebuild", [worker]
        )
    finally:
        watch.close()
    return worker, {
        "counters_answer_s": round(answered - worker.started, 2),
        "caught_up_s": round(caught_up - worker.started, 2),
        "ready_s": round(max(answered, caught_up) - worker.started, 2),
        # processing resumes before the index of timer deadlines is complete:
        # it is rebuilt from the table in the background (a deadline not yet
        # indexed fires late by at most this long)
        "deadlines_indexed_s": round(indexed - worker.started, 2),
        "worker_memory_kib": worker.memory_kib(),
    }


def _deadlines_indexed(worker: WorkerProcess) -> bool:
    counters = worker.counters()
    return bool(counters.get("timer_rebuilds")) and not counters.get("timer_rebuild_running")


def kill_and_wait_for_group(worker: WorkerProcess, settings: Settings) -> float:
    """SIGKILL ``worker``; return the seconds until its group is empty."""
    offsets = GroupOffsets(
        settings.kafka_bootstrap, settings.app_id, settings.topic(topics.USER_EVENTS)
    )
    try:
        killed = time.perf_counter()
        worker.kill()
        harness.wait_until(
            lambda: offsets.group_state()[1] == 0,
            settings.session_timeout_s * 6 + 60,
            f"group {settings.app_id} to notice the killed worker",
            interval_s=0.2,
        )
        return round(time.perf_counter() - killed, 2)
    finally:
        offsets.close()


def measure(bench: Bench, state: StateRun) -> dict[str, Any]:
    """Kill and restart the state run's worker: (a) same data dir, (b) empty one."""
    users = state.users
    settings = dataclasses.replace(state.settings, web_port=harness.free_port())
    log(f"recovery: restarting the state worker ({users:,} users) and killing it …")
    worker, _ = start_and_time(bench, settings, "recovery-warm")
    detect_a = kill_and_wait_for_group(worker, settings)

    log("recovery (a): restart with the same data dir …")
    settings = dataclasses.replace(settings, web_port=harness.free_port())
    worker, local = start_and_time(bench, settings, "recovery-local")
    detect_b = kill_and_wait_for_group(worker, settings)

    log("recovery (b): restart with an empty data dir (from the changelog) …")
    settings = dataclasses.replace(
        settings,
        web_port=harness.free_port(),
        data_dir=bench.workdir / settings.app_id / "empty-data-dir",
    )
    worker, changelog = start_and_time(bench, settings, "recovery-changelog")
    worker.stop()

    log("recovery baseline: a fresh worker with no state …")
    fresh = bench.settings("recovery-baseline")
    harness.create_topics(fresh)
    worker, baseline = start_and_time(bench, fresh, "recovery-baseline")
    worker.stop()

    for entry in (local, changelog):
        entry["users_per_s"] = round(users / entry["ready_s"])
        beyond = entry["ready_s"] - baseline["ready_s"]
        entry["users_per_s_beyond_baseline"] = round(users / beyond) if beyond > 0 else None
    return {
        "users": users,
        "changelog_records": state.result["changelog"]["records"],
        "session_timeout_s": settings.session_timeout_s,
        "group_noticed_kill_s": [detect_a, detect_b],
        "local": local,
        "changelog": changelog,
        "baseline_no_state": baseline,
    }


def report(result: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("local", "(a) same data dir (local RocksDB)"),
        ("changelog", "(b) empty data dir (changelog)"),
        ("baseline_no_state", "fresh worker, no state (fixed cost)"),
    ):
        r = result[key]
        rows.append(
            (
                label,
                r["counters_answer_s"],
                r["caught_up_s"],
                r.get("deadlines_indexed_s"),
                r.get("users_per_s"),
                r.get("users_per_s_beyond_baseline"),
            )
        )
    text = harness.table(
        f"Recovery after SIGKILL — {result['users']:,} users, "
        f"{result['changelog_records']:,} changelog records, 8 partitions on one worker",
        (
            "restart",
            "/counters/ s",
            "caught up s",
            "deadlines indexed s",
            "users/s",
            "users/s beyond fixed cost",
        ),
        rows,
    )
    waits = " and ".join(f"{s:.1f} s" for s in result["group_noticed_kill_s"])
    return text + (
        f"\n  not counted: the group noticed each kill after {waits} "
        f"(session timeout {result['session_timeout_s']} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser, events=DEFAULT_EVENTS, users=DEFAULT_USERS)
    args = parser.parse_args(argv)
    load_start = harness.load_average()
    log(f"load average at start: {harness.load_text(load_start)}")
    with Bench.open() as bench:
        state = measure_state(bench, args.users, args.events, seed=args.seed)
        result = measure(bench, state)
        print(report(result))
        doc = harness.envelope("recovery", bench, load_start, events=args.events, users=args.users)
        doc |= result
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('recovery', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
