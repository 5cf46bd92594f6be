"""The engine alone: :meth:`streams.engine.Engine.run` on the generator's
events, with a dict for the table and no I/O — what one Python core can do
with the worker's whole pure part.

Exactly what the worker does around the engine, minus Kafka, Faust, RocksDB
and Redis: the generated events, a batch of ``BATCH`` at a time in send
order, are split by partition (``streams.partitioning.partition_of``, Kafka's
murmur2), each partition's share handed to ``Engine.run`` as
``Record(key, value, offset)`` with the raw bytes as the worker reads them;
the table is a dict of ``encode_state`` bytes (decoded by ``decode_state`` on
load, encoded on every write), so encoding and decoding are counted. The
clock is the stream clock (``Partition(n, "stream")``): once with no
lateness (deadlines fire on the user's next event), once with lateness 0
(deadlines also fire in-stream as soon as the stream time passes them).
Internal messages the engine sends (none with the generator's mix) are fed
back to their partition in the next batch, as the derived agent would.

The gap between this rate and ``benchmarks.pipeline`` is what Faust, the
table, the producer and Redis cost.

    .venv/bin/python -m benchmarks.core [--events 200000 --users 20000] [--repeat 3]
    .venv/bin/python -m benchmarks.core --profile      # a cProfile of one run (no lateness)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks import harness
from benchmarks.generator import generate
from streams.batch import Input, Record
from streams.codec import decode_state, encode_state
from streams.contract import Limits
from streams.derived import DerivedMessage
from streams.engine import Engine
from streams.partition import Partition
from streams.partitioning import partition_of
from streams.policy import DEFAULT_POLICY
from streams.userstate import UserState

BATCH = 1000
PARTITIONS = 8
DEFAULT_EVENTS = 200_000
DEFAULT_USERS = 20_000
#: the generator's time anchor: fixed, so that every run sees the same events
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: the two stream-clock settings measured: no lateness, and lateness 0
LATENESS = (None, 0)


@dataclass
class Counts:
    """What one run did."""

    events: int = 0
    batches: int = 0
    writes: int = 0
    triggers: int = 0
    timers_fired: int = 0
    derived: int = 0
    dead_letters: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Data:
    """The generated events, with each key's partition computed once."""

    keys: list[bytes]
    values: list[bytes]
    partitions: list[int] = field(default_factory=list)


def prepare(events: int, users: int, seed: int = 42) -> Data:
    data = generate(events, users, seed=seed, partitions=PARTITIONS, now_ms=NOW_MS)
    of_key: dict[bytes, int] = {}
    parts = []
    for key in data.keys:
        number = of_key.get(key)
        if number is None:
            number = of_key[key] = partition_of(key, PARTITIONS)
        parts.append(number)
    if parts != data.partitions:
        raise RuntimeError("the generator and streams.partitioning disagree on a partition")
    return Data(data.keys, data.values, parts)


def run(data: Data, lateness_ms: int | None) -> Counts:
    """Every event through the engine, as the worker feeds it, a batch at a time."""
    engine = Engine(DEFAULT_POLICY, limits=Limits())
    parts = [Partition(n, "stream", lateness_ms) for n in range(PARTITIONS)]
    table: dict[bytes, bytes] = {}

    def load(key: bytes) -> UserState | None:
        raw = table.get(key)
        return decode_state(raw) if raw is not None else None

    counts = Counts()
    keys, values, partitions = data.keys, data.values, data.partitions
    pending: dict[int, list[DerivedMessage]] = {}
    for start in range(0, len(values), BATCH):
        inputs: dict[int, list[Input]] = {}
        for number, messages in pending.items():
            inputs[number] = list(messages)
        pending = {}
        for offset in range(start, min(start + BATCH, len(values))):
            number = partitions[offset]
            share = inputs.get(number)
            if share is None:
                share = inputs[number] = []
            share.append(Record(keys[offset], values[offset], offset))
        for number, share in inputs.items():
            batch = engine.run(parts[number], share, load, now_ms=NOW_MS)
            for key, state in batch.writes.items():
                table[key] = encode_state(state)
            counts.batches += 1
            counts.events += batch.events
            counts.writes += len(batch.writes)
            counts.triggers += len(batch.triggers)
            counts.timers_fired += batch.timers_fired
            counts.dead_letters += len(batch.dead_letters)
            counts.derived += len(batch.derived)
            for message in batch.derived:
                target = partition_of(message.key.encode(), PARTITIONS)
                pending.setdefault(target, []).append(message)
    return counts


def measure(
    events: int = DEFAULT_EVENTS, users: int = DEFAULT_USERS, repeat: int = 3
) -> dict[str, Any]:
    """Each lateness ``repeat`` times, interleaved; the rates and what each run did."""
    data = prepare(events, users)
    seconds: dict[int | None, list[float]] = {lateness: [] for lateness in LATENESS}
    cpu: dict[int | None, list[float]] = {lateness: [] for lateness in LATENESS}
    counts: dict[int | None, Counts] = {}
    for _ in range(repeat):
        for lateness in LATENESS:
            started, cpu_started = time.perf_counter(), time.process_time()
            counts[lateness] = run(data, lateness)
            cpu[lateness].append(time.process_time() - cpu_started)
            seconds[lateness].append(time.perf_counter() - started)
    runs = []
    for lateness in LATENESS:
        rates = sorted(events / s for s in seconds[lateness])
        cpu_rates = sorted(events / s for s in cpu[lateness])
        runs.append(
            {
                "clock": "stream",
                "lateness_ms": lateness,
                "events_per_s_best": round(rates[-1]),
                "events_per_s_median": round(statistics.median(rates)),
                "events_per_cpu_s_median": round(statistics.median(cpu_rates)),
                "seconds": [round(s, 3) for s in seconds[lateness]],
                "cpu_seconds": [round(s, 3) for s in cpu[lateness]],
                **counts[lateness].as_dict(),
            }
        )
    return {"batch": BATCH, "partitions": PARTITIONS, "repeat": repeat, "runs": runs}


def report(result: dict[str, Any]) -> str:
    rows = [
        (
            "none" if r["lateness_ms"] is None else f"{r['lateness_ms']} ms",
            f"{r['events_per_s_median']:,}",
            f"{r['events_per_s_best']:,}",
            f"{r['events_per_cpu_s_median']:,}",
            f"{r['events']:,}",
            f"{r['writes']:,}",
            f"{r['triggers']:,}",
            f"{r['timers_fired']:,}",
            f"{r['dead_letters']:,}",
        )
        for r in result["runs"]
    ]
    return harness.table(
        f"The engine alone (stream clock, batches of {result['batch']}, "
        f"{result['repeat']} runs each)",
        (
            "lateness",
            "events/s median",
            "best",
            "per CPU s",
            "events",
            "writes",
            "triggers",
            "timers",
            "dlq",
        ),
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per lateness (interleaved)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    parser.add_argument("--lines", type=int, default=40, help="rows of the cProfile")
    parser.add_argument(
        "--no-write", action="store_true", help="do not write benchmarks/results/core.json"
    )
    args = parser.parse_args(argv)
    if args.profile:
        data = prepare(args.events, args.users)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        counts = profiler.runcall(run, data, None)
        seconds = time.perf_counter() - started
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.lines)
        stats.sort_stats("cumulative").print_stats(args.lines)
        print(
            f"under cProfile: {counts.events:,} events in {seconds:.2f} s "
            f"({counts.events / seconds:,.0f} events/s); {counts.as_dict()}"
        )
        return 0
    load_start = harness.load_average()
    result = measure(args.events, args.users, args.repeat)
    doc = {
        "benchmark": "benchmarks/core.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sizes": {"events": args.events, "users": args.users},
        "machine": harness.machine(),
        "loadavg_start": load_start,
        "loadavg_end": harness.load_average(),
        **result,
    }
    print(report(result))
    print(
        f"load average: start {harness.load_text(load_start)}, "
        f"end {harness.load_text(doc['loadavg_end'])}"
    )
    if not args.no_write:
        print(f"written: {harness.write_result('core', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
