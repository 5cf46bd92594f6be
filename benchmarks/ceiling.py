"""The Python ceiling: how fast one Python process can merely read the
events from the broker and decode them, on this machine, in this run.

A raw aiokafka consumer (no consumer group, all partitions assigned, from the
beginning, large fetches) reads the pre-loaded ``user-events`` topic and
``orjson.loads`` every value — nothing else. The rate counts from the first
record received to the last. A second pass adds the pipeline's validation
(``streams.events.parse_event``) to show what validating alone costs. The
pipeline benchmark's target is a share of the first figure.

Run from the repository root against a running stack (it loads its own data
set; `benchmarks.run` shares one data set between ceiling, pipeline and
scaling instead):

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.ceiling [--events 2000000 --users 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from benchmarks import harness
from benchmarks.harness import Bench, log
from benchmarks.pipeline import Prepared, add_size_arguments, prepare
from streams.contract import Limits
from streams.events import parse_event


async def _consume(
    bootstrap: str, topic: str, end: dict[int, int], validate: bool
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        client_id="userpulse-bench-ceiling",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(end)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total = sum(end.values())
        count = 0
        decoded_bytes = 0
        first: float | None = None
        limits = Limits()
        loads = orjson.loads
        while count < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            if first is None and batches:
                first = time.perf_counter()
            for records in batches.values():
                if validate:
                    now_ms = time.time_ns() // 1_000_000
                    for record in records:
                        parse_event(record.value, now_ms=now_ms, limits=limits)
                else:
                    for record in records:
                        loads(record.value)
                count += len(records)
                decoded_bytes += sum(len(r.value) for r in records)
        last = time.perf_counter()
    finally:
        await consumer.stop()
    seconds = last - (first or last)
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds) if seconds > 0 else None,
        "mb_per_s": round(decoded_bytes / seconds / 1e6, 1) if seconds > 0 else None,
    }


def measure(bench: Bench, prepared: Prepared) -> dict[str, Any]:
    """Read + decode (the ceiling), then read + validate, of ``prepared``'s topic."""
    bootstrap = bench.base.kafka_bootstrap
    log(f"ceiling: raw aiokafka consumer over {prepared.events:,} events …")
    meter = harness.CpuMeter({"bench (consumer)": _self_pid(), "kafka": bench.kafka_pid})
    decode = asyncio.run(_consume(bootstrap, prepared.topic, prepared.end, validate=False))
    decode["cpu_cores"] = meter.shares()
    meter.mark()
    validate = asyncio.run(_consume(bootstrap, prepared.topic, prepared.end, validate=True))
    validate["cpu_cores"] = meter.shares()
    return {"read_decode": decode, "read_validate": validate}


def _self_pid() -> int:
    import os

    return os.getpid()


def report(result: dict[str, Any]) -> str:
    rows = [
        (
            "read + orjson.loads (the ceiling)",
            result["read_decode"]["events"],
            f"{result['read_decode']['seconds']:.2f}",
            result["read_decode"]["events_per_s"],
            harness.cpu_text(result["read_decode"]["cpu_cores"]),
        ),
        (
            "read + parse_event (validation)",
            result["read_validate"]["events"],
            f"{result['read_validate']['seconds']:.2f}",
            result["read_validate"]["events_per_s"],
            harness.cpu_text(result["read_validate"]["cpu_cores"]),
        ),
    ]
    return harness.table(
        "Python ceiling — one aiokafka consumer, same broker, same events",
        ("what", "events", "seconds", "events/s", "CPU cores used"),
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
        doc = harness.envelope(
            "ceiling", bench, load_start, events=args.events, users=args.users
        ) | {"load": prepared.load_summary(), **result}
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('ceiling', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
