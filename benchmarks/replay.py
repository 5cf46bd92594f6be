"""Throughput of `userpulse replay` on a generated REES46-layout file.

Generates N rows (deterministic seed) shaped like REES46's monthly files —
sorted by event_time, ~94 % views, sessions of a few rows, a few users
interleaved — then measures:

  read      CSV reading alone (the csv module)
  map       + event-time ordering and mapping to event documents (streams.datasets)
  validate  + validation with parse_event: a dry run, no Kafka
  kafka     replay to a real Kafka, once per producer configuration

and prints a table and writes benchmarks/results/replay.json.

Run from the repository root, against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.replay [--rows 200000] [--no-kafka]

Kafka is USERPULSE_KAFKA_BOOTSTRAP; every run uses a fresh topic prefix and
deletes its topics at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient

from agents.files.datasets import mapped_rows
from agents.files.opening import open_text
from agents.kafka.admin import ensure_topics
from agents.kafka.replay import DEFAULT_PRODUCER_OPTIONS, replay_file
from agents.settings import Settings
from streams import topics
from streams.errors import EventError

RESULTS = Path(__file__).resolve().parent / "results" / "replay.json"
HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)
KINDS = ["view"] * 94 + ["cart"] * 4 + ["remove_from_cart"] + ["purchase"]
CATEGORIES = [
    ("2053013555631882655", "electronics.smartphone", "samsung"),
    ("2053013563810775923", "appliances.kitchen.washer", "lg"),
    ("2232732093077520756", "construction.tools.light", ""),
    ("2053013552326770905", "", "aqua"),
]

#: Producer configurations measured: (label, EventProducer **kafka_options).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    (
        "EventProducer defaults (linger 5 ms, 16 KiB)",
        {"linger_ms": 5, "batch_size": 16384, "compression_type": None},
    ),
    ("linger 50 ms, 512 KiB, no compression", {"compression_type": None}),
    ("replay defaults (linger 50 ms, 512 KiB, gzip)", {}),
]


def generate(path: Path, rows: int, seed: int) -> None:
    """``rows`` REES46-layout rows, sorted by event_time, into ``path``."""
    rng = random.Random(seed)
    users = max(rows // 20, 1)
    active: dict[int, tuple[str, int]] = {}  # user → (session, rows left in it)
    start = datetime(2019, 10, 1, tzinfo=UTC)
    second = 0.0
    with path.open("w") as f:
        f.write(HEADER + "\n")
        for _ in range(rows):
            second += rng.expovariate(16)  # REES46 October: ~16 rows per second
            user = 512_000_000 + rng.randrange(users)
            session, left = active.get(user, ("", 0))
            if left <= 0:
                session, left = (
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    rng.randint(1, 12),
                )
            active[user] = (session, left - 1)
            category, code, brand = rng.choice(CATEGORIES)
            when = (start + timedelta(seconds=int(second))).strftime("%Y-%m-%d %H:%M:%S UTC")
            f.write(
                f"{when},{rng.choice(KINDS)},{rng.randrange(1_000_000, 60_000_000)},{category},"
                f"{code},{brand},{rng.randrange(100, 300_000) / 100:.2f},{user},{session}\n"
            )


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - started


def read_only(path: Path) -> int:
    with open_text(path) as text:
        return sum(1 for _ in csv.reader(text)) - 1  # minus the header


def map_only(path: Path) -> int:
    return sum(len(r.result) for r in mapped_rows(path) if not isinstance(r.result, EventError))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=46)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement (best and median)"
    )
    parser.add_argument("--no-kafka", action="store_true", help="skip the Kafka measurements")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    runs: dict[str, list[tuple[int, float]]] = {}
    extras: dict[str, dict[str, Any]] = {}

    def measure(stage: str, fn: Callable[[], tuple[int, float]], **extra: Any) -> None:
        count, seconds = fn()
        runs.setdefault(stage, []).append((count, seconds))
        extras[stage] = extra
        print(f"  {stage:56} {count:>9,} {seconds:>8.2f} s {count / seconds:>11,.0f}/s", flush=True)

    def dry_run() -> tuple[int, float]:
        report = replay_file(settings, path, dry_run=True)
        return report.sent, report.elapsed_s

    def to_kafka(options: dict[str, Any]) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            target = dataclasses.replace(settings, topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-")
            ensure_topics(target)
            try:
                report = replay_file(target, path, producer_options=options)
            finally:
                delete_topics(target)
            return report.sent, report.elapsed_s

        return run

    with tempfile.TemporaryDirectory(prefix="userpulse-bench-") as tmp:
        path = Path(tmp) / "2019-Oct-generated.csv"
        started = time.perf_counter()
        generate(path, args.rows, args.seed)
        size_mb = path.stat().st_size / 1e6
        print(
            f"generated {args.rows:,} REES46 rows ({size_mb:.1f} MB) in "
            f"{time.perf_counter() - started:.1f} s; python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        for rep in range(1, args.repeat + 1):
            print(f"run {rep}/{args.repeat}")
            measure(
                "read CSV rows (csv module alone)",
                lambda: timed(lambda: read_only(path)),
                unit="rows",
            )
            measure(
                "read + order + map to event docs",
                lambda: timed(lambda: map_only(path)),
                unit="events",
            )
            measure("read + map + validate (dry run, no Kafka)", dry_run, unit="events")
            if args.no_kafka:
                continue
            for label, options in CONFIGS:
                measure(
                    f"replay to Kafka: {label}",
                    to_kafka(options),
                    unit="events",
                    producer_options={**DEFAULT_PRODUCER_OPTIONS, **options},
                    partitions=settings.partitions,
                )

    results = []
    print(f"\n{'stage':58} {'count':>9} {'best':>12} {'median':>12}   (per second)")
    for stage, samples in runs.items():
        rates = sorted(count / seconds for count, seconds in samples)
        best, median = rates[-1], statistics.median(rates)
        print(f"{stage:58} {samples[0][0]:>9,} {best:>12,.0f} {median:>12,.0f}")
        results.append(
            {
                "stage": stage,
                "count": samples[0][0],
                "per_s_best": round(best),
                "per_s_median": round(median),
                "seconds": [round(seconds, 3) for _, seconds in samples],
                **extras[stage],
            }
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (max RSS) {peak_mb:.0f} MB")
    summary = {
        "benchmark": "replay",
        "rows": args.rows,
        "seed": args.seed,
        "repeat": args.repeat,
        "file_mb": round(size_mb, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kafka_bootstrap": None if args.no_kafka else settings.kafka_bootstrap,
        "peak_rss_mb": round(peak_mb),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.output}")
    return 0


def delete_topics(settings: Settings) -> None:
    names = [settings.topic(t) for t in topics.ALL_TOPICS]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        existing = set(admin.list_topics())
        admin.delete_topics([n for n in names if n in existing])
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
