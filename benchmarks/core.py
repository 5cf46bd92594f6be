"""The pure core's speed: the worker's per-batch work without Kafka, Faust,
RocksDB or Redis — what one Python core can do with the same events.

Runs the generator's events through exactly the functions the worker calls
on a batch (``parse_event``, ``decode_state``, ``fold_events``,
``encode_state``, ``profile_fields`` / ``profile_indexes``, ``next_deadline``
into a ``TimerIndex``, the due deadlines of the batch's partitions with
``run_until`` on stream time), with a dict for the table. The gap between this
rate and the pipeline benchmark's is what Faust, the table, the producer and
Redis cost.

    .venv/bin/python -m benchmarks.core [--events 200000 --users 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from benchmarks.generator import generate
from streams.engine import fold as fold_events
from streams.events import Limits, parse_event
from streams.policy import DEFAULT_POLICY
from streams.profile import profile_fields, profile_indexes
from streams.state import UserState, decode_state, encode_state, evolve
from streams.timed import TimerIndex, next_deadline, run_until

BATCH = 1000


def run(keys: list[bytes], values: list[bytes], partitions: list[int]) -> dict[str, int]:
    """Process every event as the worker does, a batch of ``BATCH`` at a time."""
    policy = DEFAULT_POLICY
    limits = Limits()
    table: dict[bytes, bytes] = {}
    timers: dict[int, TimerIndex] = {}
    stream_time: dict[int, int] = {}
    arrived = time.time_ns() // 1_000_000
    counts = {"events": 0, "stored": 0, "triggers": 0, "timers_fired": 0, "derived": 0}
    for start in range(0, len(values), BATCH):
        users: dict[bytes, list] = {}
        user_partition: dict[bytes, int] = {}
        for i in range(start, min(start + BATCH, len(values))):
            event = parse_event(values[i], now_ms=arrived, limits=limits)
            key, partition = keys[i], partitions[i]
            if event.timestamp_ms > stream_time.get(partition, 0):
                stream_time[partition] = event.timestamp_ms
            users.setdefault(key, []).append(event)
            user_partition[key] = partition
            counts["events"] += 1
        for key, events in users.items():
            raw = table.get(key)
            old = decode_state(raw) if raw is not None else None
            folded = fold_events(old, events, policy)
            counts["derived"] += len(folded.derived)
            if folded.changes and folded.state is not None:
                _store(table, timers, key, user_partition[key], old, folded.state, folded.changes)
                counts["stored"] += 1
                counts["triggers"] += len(folded.triggers)
        for partition in set(user_partition.values()):
            index = timers.get(partition)
            if not index:
                continue
            now = stream_time[partition]
            for key, _deadline in index.pop_due(now):
                raw = table.get(key)
                old = decode_state(raw) if raw is not None else None
                new, fired = run_until(old, now, policy)
                counts["timers_fired"] += 1
                if new is not old and new is not None:
                    _store(table, timers, key, partition, old, new, 1)
                    counts["triggers"] += len(fired)
                else:
                    index.set(key, next_deadline(old, policy))
    return counts


def _store(
    table: dict[bytes, bytes],
    timers: dict[int, TimerIndex],
    key: bytes,
    partition: int,
    old: UserState | None,
    new: UserState,
    changes: int,
) -> None:
    revision = (old.revision if old is not None else 0) + changes
    new = evolve(new, {"revision": revision})
    table[key] = encode_state(new)
    if new.event_count > 0:
        profile_fields(new, version=revision)
        profile_indexes(new)
    timers.setdefault(partition, TimerIndex()).set(key, next_deadline(new, DEFAULT_POLICY))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    args = parser.parse_args(argv)
    data = generate(args.events, args.users, seed=42, partitions=8)
    started = time.perf_counter()
    if args.profile:
        profiler = cProfile.Profile()
        counts = profiler.runcall(run, data.keys, data.values, data.partitions)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    else:
        counts = run(data.keys, data.values, data.partitions)
    seconds = time.perf_counter() - started
    print(
        f"pure core: {counts['events']:,} events of {args.users:,} users in {seconds:.2f} s = "
        f"{counts['events'] / seconds:,.0f} events/s (one core, batches of {BATCH}); "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "events")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
