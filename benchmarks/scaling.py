"""Scaling: pipeline throughput with 1 and with 2 worker processes sharing
one consumer group (8 partitions), on the same pre-loaded topic.

Each run is a new consumer group (USERPULSE_APP_ID) reading the same topic
from the start, so both see exactly the same events; the measurement is the
pipeline benchmark's (first → last committed offset, and the steady 10 → 90 %
rate, which leaves out the rebalance when the second worker joins). CPU
shares show what the workers, the broker and Redis took: on a 2-core machine
two workers and the broker compete for the same two cores, so the second
worker cannot double the rate — the table says how much it adds here.

Run from the repository root against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.scaling [--events 2000000 --users 200000]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks import harness
from benchmarks.harness import Bench, log
from benchmarks.pipeline import Prepared, add_size_arguments, prepare, run_workers


def measure(
    bench: Bench,
    prepared: Prepared,
    *,
    counts: tuple[int, ...] = (1, 2),
    known: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """Throughput per worker count; ``known`` holds results already measured
    in this run (the pipeline benchmark's single worker) to reuse."""
    runs: dict[str, Any] = {}
    for n in counts:
        if known and n in known:
            runs[str(n)] = known[n]
            continue
        runs[str(n)] = run_workers(bench, prepared, workers=n, name=f"scaling-{n}").result
    one = runs.get("1", {}).get("events_per_s")
    for r in runs.values():
        r["speed_up"] = round(r["events_per_s"] / one, 2) if one else None
    return {"events": prepared.events, "users": prepared.users, "runs": runs}


def report(result: dict[str, Any]) -> str:
    rows = []
    for n, r in result["runs"].items():
        rows.append(
            (
                n,
                r["events_per_s"],
                r.get("steady_10_90_events_per_s"),
                r.get("speed_up"),
                harness.cpu_text(r["cpu_cores"]),
            )
        )
    return harness.table(
        f"Scaling — {result['events']:,} events of {result['users']:,} users, 8 partitions",
        ("workers", "events/s", "steady events/s", "× 1 worker", "CPU cores used in the window"),
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    load_start = harness.load_average()
    log(f"load average at start: {harness.load_text(load_start)}")
    with Bench.open() as bench:
        prepared = prepare(bench, args.events, args.users, seed=args.seed)
        result = measure(bench, prepared)
        print(report(result))
        doc = harness.envelope("scaling", bench, load_start, events=args.events, users=args.users)
        doc |= result
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('scaling', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
