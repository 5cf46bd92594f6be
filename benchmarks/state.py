"""State size: what each user costs in RocksDB, in the changelog, in Redis,
and the worker's memory at 1,000,000 users.

A data set of 1,000,000 users (2,000,000 events by default: most users have
one or two events, a few very many — benchmarks.generator's heavy tail) is
loaded and processed by one worker, which is then stopped gracefully
(memtables flushed). Then:

- RocksDB: the size of the worker's data dir / users, as left by the worker
  and again after a manual full compaction of every table database
  (rocksdict ``compact_range``), with the number of keys found;
- changelog: the ``{app id}-user-state-changelog`` topic read from the
  start — records, average record size (key + value), and the average size
  of each user's latest record (what recovery must restore per user);
- Redis: INFO memory ``used_memory`` after the run minus before, / users;
- worker memory: VmRSS and VmHWM (peak) from /proc/<pid>/status once every
  user is in the table.

Run from the repository root against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.state [--users 1000000 --events 2000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.settings import Settings
from benchmarks import harness
from benchmarks.harness import Bench, log
from benchmarks.pipeline import Prepared, add_size_arguments, prepare, run_workers

DEFAULT_USERS = 1_000_000
DEFAULT_EVENTS = 2_000_000
#: shorter than the default 30 s so that a killed worker leaves the group sooner
#: (recovery, which runs on this state, waits for that before it restarts)
SESSION_TIMEOUT_S = 10


@dataclass
class StateRun:
    """A processed data set: the worker's settings (app id, data dir, topics)."""

    prepared: Prepared
    settings: Settings
    result: dict[str, Any]

    @property
    def users(self) -> int:
        return self.prepared.users


def rocksdb_size(data_dir: Path, compact: bool = True) -> dict[str, Any]:
    """The data dir's size, and again after compacting every table database."""
    before = harness.dir_size(data_dir)
    out: dict[str, Any] = {"bytes": before, "compacted": False}
    dbs = sorted(p for p in data_dir.rglob("*.db") if p.is_dir())
    out["databases"] = len(dbs)
    if not compact:
        return out
    try:
        from rocksdict import Options, Rdict

        keys = 0
        for path in dbs:
            db = Rdict(str(path), options=Options(raw_mode=True))
            try:
                db.compact_range(None, None)
                keys += sum(1 for _ in db.keys())  # noqa: SIM118 - raw-mode Rdict cannot be iterated directly
            finally:
                db.close()
        out |= {
            "compacted": True,
            "keys": keys,
            "bytes_after_compaction": harness.dir_size(data_dir),
        }
    except Exception as exc:  # report, don't guess
        out["compaction_error"] = f"{type(exc).__name__}: {exc}"
    return out


async def _changelog(bootstrap: str, topic: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    end = harness.end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        client_id="userpulse-bench-changelog",
    )
    await consumer.start()
    records = key_bytes = value_bytes = 0
    latest: dict[bytes, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(end)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total = sum(end.values())
        while records < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if not batches and all(await _at_end(consumer, tps, end)):
                break
            for batch in batches.values():
                for r in batch:
                    k, v = len(r.key or b""), len(r.value or b"")
                    records += 1
                    key_bytes += k
                    value_bytes += v
                    latest[r.key or b""] = k + v
    finally:
        await consumer.stop()
    return {
        "topic": topic,
        "records": records,
        "keys": len(latest),
        "avg_record_bytes": round((key_bytes + value_bytes) / records, 1) if records else None,
        "avg_value_bytes": round(value_bytes / records, 1) if records else None,
        "avg_latest_record_bytes": round(sum(latest.values()) / len(latest), 1) if latest else None,
        "total_bytes": key_bytes + value_bytes,
    }


async def _at_end(consumer: Any, tps: list[Any], end: dict[int, int]) -> list[bool]:
    return [await consumer.position(tp) >= end[tp.partition] for tp in tps]


def changelog_stats(bootstrap: str, app_id: str) -> dict[str, Any]:
    return asyncio.run(_changelog(bootstrap, f"{app_id}-user-state-changelog"))


def measure(bench: Bench, users: int, events: int, *, seed: int = 43) -> StateRun:
    """Process ``users`` users' events with one worker and measure what they take."""
    prepared = prepare(bench, events, users, seed=seed, name="state")
    run = run_workers(
        bench, prepared, name="state", keep_running=True, session_timeout_s=SESSION_TIMEOUT_S
    )
    worker = run.workers[0]
    memory = worker.memory_kib()
    worker.stop()
    settings = worker.settings
    rocks = rocksdb_size(settings.data_dir)
    log("state: reading the changelog …")
    changelog = changelog_stats(bench.base.kafka_bootstrap, settings.app_id)
    r = run.result
    result = {
        "users": users,
        "events": events,
        "processing": {
            k: r[k] for k in ("events_per_s", "steady_10_90_events_per_s", "window_s", "counters")
        },
        "rocksdb": rocks,
        "rocksdb_bytes_per_user": round(rocks["bytes"] / users, 1),
        "rocksdb_bytes_per_user_compacted": round(rocks["bytes_after_compaction"] / users, 1)
        if rocks.get("compacted")
        else None,
        "changelog": changelog,
        "redis_used_memory_delta": r["redis_used_memory_delta"],
        "redis_bytes_per_user": r["redis_bytes_per_user"],
        "worker_memory_kib": memory,
        "worker_rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
        "worker_peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
    }
    return StateRun(prepared, settings, result)


def report(result: dict[str, Any]) -> str:
    rocks, changelog = result["rocksdb"], result["changelog"]
    users = result["users"]
    rows: list[tuple[Any, ...]] = [
        (
            "RocksDB data dir, as the worker left it",
            rocks["bytes"],
            result["rocksdb_bytes_per_user"],
        ),
        (
            "RocksDB data dir, after full compaction",
            rocks.get("bytes_after_compaction"),
            result["rocksdb_bytes_per_user_compacted"],
        ),
        (
            f"changelog: {changelog['records']:,} records, avg record",
            changelog["total_bytes"],
            changelog["avg_record_bytes"],
        ),
        ("changelog: each user's latest record", None, changelog["avg_latest_record_bytes"]),
        (
            "Redis used_memory delta",
            result["redis_used_memory_delta"],
            result["redis_bytes_per_user"],
        ),
    ]
    text = harness.table(
        f"State — {users:,} users, {result['events']:,} events",
        ("where", "bytes", "bytes/user"),
        rows,
    )
    if "compaction_error" in rocks:
        text += f"\n  compaction not possible: {rocks['compaction_error']}"
    elif rocks.get("compacted"):
        text += (
            f"\n  RocksDB keys after compaction: {rocks['keys']:,} (users + Faust's offset keys)"
        )
    text += (
        f"\n  worker RSS with every user in the table: {result['worker_rss_mib']:,.0f} MiB "
        f"(peak {result['worker_peak_rss_mib']:,.0f} MiB)"
        f"\n  processing rate: {result['processing']['events_per_s']:,} events/s"
    )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser, events=DEFAULT_EVENTS, users=DEFAULT_USERS)
    args = parser.parse_args(argv)
    load_start = harness.load_average()
    log(f"load average at start: {harness.load_text(load_start)}")
    with Bench.open() as bench:
        run = measure(bench, args.users, args.events, seed=args.seed)
        print(report(run.result))
        doc = harness.envelope("state", bench, load_start, events=args.events, users=args.users)
        doc |= {"load": run.prepared.load_summary(), **run.result}
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('state', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
