"""Throughput of the Redis profile projection (agents.redis.projection.RedisProjection).

Stages and flushes N distinct users' profiles (12 fields, 4 index dimensions)
to the Redis of USERPULSE_REDIS_URL under a key prefix unique to the run, then
updates every user so that an index moves, then updates without a move, then
erases every user; prints operations per second (stage + flush, the way the
worker pays for them) and writes benchmarks/results/projection.json. The
run's keys are deleted at the end.

Run from the repository root:

    eval "$(userpulse stack up)"
    .venv/bin/python -m benchmarks.projection [--users 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from agents.envvars import redact_url
from agents.redis.keys import glob_escape
from agents.redis.projection import RedisProjection
from agents.settings import Settings

STAGES = ("acquired", "activated", "retained", "monetized", "referrer")
HEALTHS = ("new", "active", "at_risk", "dormant", "resurrected")
SEGMENTS = ("重要价值客户", "重要发展客户", "重要保持客户", "重要挽留客户", "一般价值客户", None)
TIERS = ("high", "mid", "low")
RESULTS = Path(__file__).parent / "results" / "projection.json"


def profile(i: int, version: int, stage: str) -> tuple[dict[str, str], dict[str, str | None]]:
    """A realistic profile: 12 fields plus ``version``, and 4 index memberships."""
    health, segment, tier = HEALTHS[i % 5], SEGMENTS[i % 6], TIERS[i % 3]
    fields = {
        "user_id": f"user-{i:07d}",
        "version": str(version),
        "stage": stage,
        "health": health,
        "rfm": f"{i % 5 + 1}{(i // 5) % 5 + 1}{(i // 25) % 5 + 1}",
        "tier": tier,
        "ltv": f"{(i % 977) * 3.17:.2f}",
        "orders": str(i % 13),
        "first_seen": str(1_700_000_000_000 + i),
        "last_seen": str(1_700_000_000_000 + i * 7 + version),
        "event_count": str(10 + version + i % 50),
        "channel": ("web", "ios", "android", "email")[i % 4],
    }
    if segment is not None:
        fields["segment"] = segment
    return fields, {"stage": stage, "health": health, "segment": segment, "tier": tier}


async def phase(
    url: str, prefix: str, users: int, stage_all: Callable[[RedisProjection], None]
) -> dict[str, float]:
    projection = RedisProjection.from_url(url, prefix)
    try:
        start = time.perf_counter()
        stage_all(projection)
        staged = time.perf_counter()
        applied = await projection.flush(time.monotonic())
        done = time.perf_counter()
    finally:
        await projection.close()
    if applied != users or projection.pending:
        raise SystemExit(f"expected {users} operations applied, got {applied}")
    return {
        "ops_per_s": users / (done - start),
        "stage_s": staged - start,
        "flush_s": done - staged,
    }


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[str] = []
    for key in client.scan_iter(f"{glob_escape(prefix)}*", count=5000):
        batch.append(key)
        if len(batch) == 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def run_once(url: str, client: redis.Redis, users: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    ids = [f"user-{i:07d}" for i in range(users)]
    profiles_v1 = [profile(i, 1, STAGES[i % 5]) for i in range(users)]
    profiles_v2 = [profile(i, 2, STAGES[(i + 1) % 5]) for i in range(users)]  # stage moves
    profiles_v3 = [profile(i, 3, STAGES[(i + 1) % 5]) for i in range(users)]  # no move

    def stager(
        version: int, profiles: list[tuple[dict[str, str], dict[str, str | None]]]
    ) -> Callable[[RedisProjection], None]:
        def stage_all(projection: RedisProjection) -> None:
            for user_id, (fields, indexes) in zip(ids, profiles, strict=True):
                projection.stage(user_id, version, fields, indexes)

        return stage_all

    def erase_all(projection: RedisProjection) -> None:
        for user_id in ids:
            projection.erase(user_id, 4)

    try:
        before = used_memory(client)
        first = asyncio.run(phase(url, prefix, users, stager(1, profiles_v1)))
        per_user = (used_memory(client) - before) / users
        move = asyncio.run(phase(url, prefix, users, stager(2, profiles_v2)))
        same = asyncio.run(phase(url, prefix, users, stager(3, profiles_v3)))
        erase = asyncio.run(phase(url, prefix, users, erase_all))
        check = client.scard(f"{prefix}idx:stage:acquired")
        if check != 0:
            raise SystemExit(f"after erasing everyone, {check} users are still 'acquired'")
    finally:
        delete_prefix(client, prefix)
    return {
        "first_write": first["ops_per_s"],
        "update_moving_index": move["ops_per_s"],
        "update_same_indexes": same["ops_per_s"],
        "erase": erase["ops_per_s"],
        "first_write_flush_share": first["flush_s"] / (first["flush_s"] + first["stage_s"]),
        "redis_bytes_per_user": per_user,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-save", action="store_true", help="do not write the results file")
    options = parser.parse_args()

    settings = Settings.from_env()
    url = settings.redis_url.reveal()
    client = redis.Redis.from_url(url, decode_responses=True)
    server = client.info("server")
    runs = [run_once(url, client, options.users) for _ in range(options.repeat)]
    client.close()

    median = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    print(
        f"Redis projection, {options.users:,} users, 12 fields + 4 indexes, "
        f"Redis {server['redis_version']} at {redact_url(url)}, median of {options.repeat}:"
    )
    labels = {
        "first_write": "first writes",
        "update_moving_index": "updates moving an index (stage)",
        "update_same_indexes": "updates, indexes unchanged",
        "erase": "erasures",
    }
    for name, label in labels.items():
        runs_text = " / ".join(f"{r[name]:,.0f}" for r in runs)
        print(f"  {label:34s} {median[name]:>9,.0f} ops/s   (runs: {runs_text})")
    print(f"  flush share of first-write time    {median['first_write_flush_share']:.0%}")
    print(f"  Redis memory per user              {median['redis_bytes_per_user']:,.0f} bytes")

    if not options.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "benchmark": "benchmarks/projection.py",
            "users": options.users,
            "fields": 12,
            "index_dimensions": 4,
            "max_batch": 2000,
            "repeat": options.repeat,
            "median": {k: round(v, 3) for k, v in median.items()},
            "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
            "environment": {
                "python": platform.python_version(),
                "redis_server": server["redis_version"],
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
            },
        }
        RESULTS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
