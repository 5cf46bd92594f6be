"""Pipeline throughput: one `userpulse worker` process doing the whole job —
validate, apply to the RocksDB changelog table, project to Redis, emit
triggers — on a pre-loaded ``user-events`` topic.

The data set (benchmarks.generator: 2,000,000 events of 200,000 users by
default) is produced into a fresh topic first; then a worker is started as a
subprocess with its own USERPULSE_APP_ID (= consumer group), topic prefix,
Redis key prefix and a data dir in a temporary directory. The benchmark polls
the group's committed offsets (kafka-python admin client) against the
topic's end offsets: the rate is the events committed between the first
commit seen and the moment every partition is committed to its end, divided
by that time. Worker start-up (imports, group join, first commit) is outside
the window and reported apart, as is the steady rate between 10 % and 90 %
committed. Faust commits every 2.8 s, so the window's ends are known to
about ±3 s: small data sets give coarse rates.

CPU is reported for the worker, the broker, Redis and the machine over the
window (1.0 = one core), so the broker's share on a small machine is visible.

Run from the repository root against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.pipeline [--events 2000000 --users 200000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import harness
from benchmarks.generator import Dataset, LoadReport, describe, generate, load
from benchmarks.harness import Bench, CpuMeter, GroupOffsets, WorkerProcess, log
from streams import topics

DEFAULT_EVENTS = 2_000_000
DEFAULT_USERS = 200_000


@dataclass
class Prepared:
    """A data set loaded into its own topic, ready to be consumed by any
    number of consumer groups."""

    name: str
    prefix: str
    topic: str
    data: Dataset
    loaded: LoadReport
    end: dict[int, int]

    @property
    def events(self) -> int:
        return sum(self.end.values())

    @property
    def users(self) -> int:
        return self.data.users

    def load_summary(self) -> dict[str, Any]:
        return {
            "events": self.loaded.events,
            "users": self.data.users,
            "bytes": self.loaded.bytes,
            "generate_s": round(self.data.generate_s, 2),
            "generate_events_per_s": round(len(self.data) / self.data.generate_s),
            "load_s": round(self.loaded.seconds, 2),
            "load_events_per_s": round(self.loaded.events_per_s),
            "load_mb_per_s": round(self.loaded.mb_per_s, 1),
            "mix": self.data.type_counts(),
        }


def add_size_arguments(
    parser: argparse.ArgumentParser, events: int = DEFAULT_EVENTS, users: int = DEFAULT_USERS
) -> None:
    parser.add_argument("--events", type=int, default=events, help=f"default {events:,}")
    parser.add_argument("--users", type=int, default=users, help=f"default {users:,}")
    parser.add_argument("--seed", type=int, default=42)


def prepare(
    bench: Bench, events: int, users: int, *, seed: int = 42, name: str = "data"
) -> Prepared:
    """Generate the data set and produce it into a fresh topic."""
    prefix = bench.topic_prefix(name)
    settings = bench.settings(f"{name}-loader", prefix=prefix)
    harness.create_topics(settings)
    topic = settings.topic(topics.USER_EVENTS)
    data = generate(events, users, seed=seed, partitions=settings.partitions)
    log(
        f"generated {describe(data)}\n"
        f"  in {data.generate_s:.2f} s ({len(data) / data.generate_s:,.0f} events/s, pre-encoded)"
    )
    loaded = load(bench.base.kafka_bootstrap, topic, data)
    log(
        f"loaded into {topic} in {loaded.seconds:.2f} s: {loaded.events_per_s:,.0f} events/s, "
        f"{loaded.mb_per_s:.1f} MB/s (aiokafka, 1 MiB batches per partition, acks=1, no compression)"
    )
    end = harness.end_offsets(bench.base.kafka_bootstrap, topic)
    if sum(end.values()) != events:
        raise harness.BenchError(
            f"topic {topic} holds {sum(end.values()):,} events, not {events:,}"
        )
    return Prepared(name, prefix, topic, data, loaded, end)


@dataclass
class Run:
    """Workers that consumed a prepared topic, and what was measured."""

    name: str
    workers: list[WorkerProcess]
    result: dict[str, Any]


def run_workers(
    bench: Bench,
    prepared: Prepared,
    *,
    workers: int = 1,
    name: str = "pipeline",
    keep_running: bool = False,
    session_timeout_s: int | None = None,
    clock: str = "stream",
) -> Run:
    """Start ``workers`` worker processes (one consumer group) on the
    prepared topic and measure until everything is committed.

    The workers decide deadlines on stream time (``USERPULSE_CLOCK=stream``),
    as a backfill of history should: the data set's events are up to 28 days
    old, and on the wall clock every user's every deadline would be already
    past — each event of a user would first undo the at-risk/dormant changes
    a timer had just made, an amount of work that depends on timing and that
    live traffic never sees."""
    base = bench.settings(name, prefix=prepared.prefix, clock=clock)
    if session_timeout_s is not None:
        base = dataclasses.replace(base, session_timeout_s=session_timeout_s)
    all_settings = [
        dataclasses.replace(
            base,
            data_dir=bench.workdir / base.app_id / f"worker-{i}",
            web_port=harness.free_port() if i else base.web_port,
        )
        for i in range(workers)
    ]
    redis_url = bench.base.redis_url.reveal()
    redis_before = harness.redis_used_memory(redis_url)
    offsets = GroupOffsets(bench.base.kafka_bootstrap, base.app_id, prepared.topic)
    procs = [bench.start_worker(s, f"{name}-{i}") for i, s in enumerate(all_settings)]
    pids: dict[str, int | None] = {
        f"worker {i}" if workers > 1 else "worker": p.pid for i, p in enumerate(procs)
    }
    pids |= {"kafka": bench.kafka_pid, "redis": bench.redis_pid, "bench (poller)": os.getpid()}
    meter = CpuMeter(pids)
    marked = False

    def on_sample(_t: float, committed: int) -> None:
        nonlocal marked
        if committed > 0 and not marked:
            meter.mark()  # CPU shares cover the measured window only
            marked = True

    log(
        f"{name}: {workers} worker(s), group {base.app_id}, {prepared.events:,} events "
        f"of {prepared.users:,} users waiting in {prepared.topic} …"
    )
    try:
        progress = harness.watch_committed(offsets, prepared.end, procs, on_sample=on_sample)
        shares = meter.shares()
        totals = _counters_when_flushed(procs)
    finally:
        offsets.close()
    redis_after = harness.redis_used_memory(redis_url)
    memory = [p.memory_kib() for p in procs]
    result: dict[str, Any] = {
        "workers": workers,
        "app_id": base.app_id,
        "clock": clock,
        **progress.summary(),
        "cpu_cores": shares,
        "counters": totals,
        "worker_memory_kib": memory,
        "redis_used_memory_delta": redis_after - redis_before,
        "redis_bytes_per_user": round((redis_after - redis_before) / prepared.users, 1),
        "progress": _thin(progress),
    }
    if totals["dead_letters"]:
        result["warning"] = f"{totals['dead_letters']} events were dead-lettered"
    if not keep_running:
        for proc in procs:
            proc.stop()
        result["rocksdb"] = [
            harness.dir_size(s.data_dir) for s in all_settings
        ]  # after a graceful stop: memtables flushed
        result["rocksdb_bytes_per_user"] = round(sum(result["rocksdb"]) / prepared.users, 1)
    return Run(name, procs, result)


def _counters_when_flushed(procs: list[WorkerProcess], timeout_s: float = 120.0) -> dict[str, int]:
    """The workers' counters, summed, once no Redis profile is pending."""
    deadline = time.perf_counter() + timeout_s
    while True:
        counters = [p.counters() for p in procs]
        if all(c.get("projection_pending", 0) == 0 for c in counters):
            break
        if time.perf_counter() > deadline:
            break
        time.sleep(0.25)
    keys = sorted({k for c in counters for k, v in c.items() if isinstance(v, int)})
    return {k: sum(int(c.get(k, 0)) for c in counters) for k in keys}


def _thin(progress: harness.Progress, points: int = 120) -> list[tuple[float, int]]:
    """The committed-offsets curve, at most ``points`` samples, seconds from process start."""
    samples = progress.samples
    step = max(1, len(samples) // points)
    kept = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return [(round(t - progress.started_at, 2), c) for t, c in kept]


def report(run: Run, ceiling: float | None = None) -> str:
    r = run.result
    rows: list[tuple[Any, ...]] = [
        ("events committed in the window", r["events_in_window"]),
        ("window (first → last commit)", f"{r['window_s']:.1f} s"),
        ("throughput", f"{r['events_per_s']:,} events/s"),
        ("steady (10 % → 90 % committed)", _rate(r["steady_10_90_events_per_s"])),
        ("start-up (process start → first commit)", f"{r['first_commit_after_start_s']:.1f} s"),
        (
            "counters: events / triggers / timers fired / dead letters",
            _counters_text(r["counters"]),
        ),
        ("batching: events per batch / state writes per event", _batching_text(r["counters"])),
        ("CPU cores used in the window", harness.cpu_text(r["cpu_cores"])),
        ("worker RSS (peak)", _memory_text(r["worker_memory_kib"])),
        ("Redis memory per user", f"{r['redis_bytes_per_user']:,.0f} B"),
    ]
    if "rocksdb_bytes_per_user" in r:
        rows.append(("RocksDB data dir per user", f"{r['rocksdb_bytes_per_user']:,.0f} B"))
    if ceiling:
        rows.append(("share of the ceiling", f"{r['events_per_s'] / ceiling:.1%}"))
    title = f"Pipeline — {r['workers']} worker(s), full job (validate, state, Redis, triggers)"
    return harness.table(title, ("measure", "value"), rows)


def _rate(value: int | None) -> str:
    return f"{value:,} events/s" if value else "—"


def _counters_text(c: dict[str, int]) -> str:
    fired = c.get("timers_fired")
    return (
        f"{c['events']:,} / {c['triggers']:,} / {'—' if fired is None else f'{fired:,}'} / "
        f"{c['dead_letters']:,}"
    )


def _batching_text(c: dict[str, int]) -> str:
    batches, writes, events = c.get("batches"), c.get("state_writes"), c.get("events", 0)
    if not batches or writes is None or not events:
        return "—"
    return f"{events / batches:,.1f} / {writes / events:.2f}"


def _memory_text(memory: list[dict[str, int]]) -> str:
    return ", ".join(
        f"{m.get('VmRSS', 0) / 1024:,.0f} MiB ({m.get('VmHWM', 0) / 1024:,.0f})" for m in memory
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    load_start = harness.load_average()
    log(f"load average at start: {harness.load_text(load_start)}")
    with Bench.open() as bench:
        prepared = prepare(bench, args.events, args.users, seed=args.seed)
        run = run_workers(bench, prepared, workers=args.workers)
        print(report(run))
        doc = harness.envelope(
            "pipeline", bench, load_start, events=args.events, users=args.users
        ) | {"load": prepared.load_summary(), **run.result}
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('pipeline', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
