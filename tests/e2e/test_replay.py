"""End to end: `replay_file` publishes a REES46-layout file to real Kafka, a
`userpulse worker` process turns it into triggers and Redis profiles, and a
second replay of the same file changes nothing (deterministic event ids)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.kafka.reader import Record, collect
from agents.kafka.replay import replay_file
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.datasets import REES46, map_rows, parse_rees46_time
from streams.errors import EventError
from streams.triggers import TYPE_STAGE_CHANGED
from streams.userstate import DEDUP_WINDOW
from tests.e2e.conftest import Worker, wait_for

pytestmark = pytest.mark.e2e

HEADER = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]

# (seconds after 2019-10-01T00:00:00Z, event_type, product, price, user, session)
SCRIPT: list[tuple[int, str, str, str, str, str]] = [
    (0, "view", "1004856", "130.76", "541000001", "s-1a"),
    (3, "view", "1005115", "975.57", "541000002", "s-2a"),
    (7, "view", "1004856", "130.76", "541000001", "s-1a"),
    (9, "cart", "1004856", "130.76", "541000001", "s-1a"),
    (12, "view", "3601530", "483.92", "541000003", "s-3a"),
    (15, "cart", "1005115", "975.57", "541000002", "s-2a"),
    (15, "like", "1005115", "975.57", "541000001", "s-1a"),  # the bad row: no such event_type
    (20, "remove_from_cart", "1005115", "975.57", "541000002", "s-2a"),
    (21, "view", "3601530", "483.92", "541000003", "s-3a"),
    (30, "purchase", "1004856", "130.76", "541000001", "s-1a"),
    (33, "view", "4100000", "9.99", "541000004", "s-4a"),
    (40, "view", "3601531", "12.00", "541000003", "s-3a"),
    (41, "cart", "4100000", "9.99", "541000004", "s-4a"),
    (3600, "view", "1005115", "975.57", "541000002", "s-2b"),  # a new session an hour later
    (3700, "cart", "4100001", "19.99", "541000004", "s-4b"),
    (3710, "purchase", "4100001", "19.99", "541000004", "s-4b"),
]
#: events per user, session_started included — counted by hand
EXPECTED = {"541000001": 5, "541000002": 6, "541000003": 4, "541000004": 6}


def rows() -> list[dict[str, str]]:
    return [
        {
            "event_time": time.strftime(
                "%Y-%m-%d %H:%M:%S UTC", time.gmtime(1_569_888_000 + seconds)
            ),
            "event_type": kind,
            "product_id": product,
            "category_id": "2053013555631882655",
            "category_code": "electronics.smartphone",
            "brand": "acme",
            "price": price,
            "user_id": user,
            "user_session": session,
        }
        for seconds, kind, product, price, user, session in SCRIPT
    ]


def write_rees46(path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows())
    return path


def counters(settings: Settings) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.web_port}/counters/"
    with urllib.request.urlopen(url, timeout=10) as response:
        result: dict[str, Any] = orjson.loads(response.read())
    return result


def first_seen_users(records: list[Record]) -> Counter[str]:
    found: Counter[str] = Counter()
    for record in records:
        trigger = record.json()
        if trigger["type"] == TYPE_STAGE_CHANGED and trigger["reason"]["rule"] == "first_seen":
            found[trigger["user_id"]] += 1
    return found


def test_a_replayed_dataset_becomes_triggers_and_profiles_and_a_second_replay_changes_nothing(
    settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    # what the mapping says each user gets (session_started included)
    mapped: Counter[str] = Counter()
    times: dict[str, list[int]] = {}
    for _, result in map_rows(REES46, rows()):
        if not isinstance(result, EventError):
            mapped.update(m.user_id for m in result)
            for m in result:
                times.setdefault(m.user_id, []).append(m.timestamp_ms)
    assert mapped == EXPECTED and max(EXPECTED.values()) <= DEDUP_WINDOW
    users = sorted(EXPECTED)
    total = sum(EXPECTED.values())

    path = write_rees46(tmp_path / "2019-Oct-sample.csv")
    rejected = tmp_path / "rejected.jsonl"
    report = replay_file(settings, path, rejected_path=rejected)
    assert (report.layout, report.presorted) == (REES46, True)
    assert (report.rows, report.events, report.sent, report.rejected) == (
        len(SCRIPT),
        total,
        total,
        1,
    )
    (bad,) = [orjson.loads(line) for line in rejected.read_bytes().splitlines()]
    assert (bad["line"], bad["stage"], bad["code"]) == (8, "map", "unknown_event_type")
    assert bad["row"]["event_type"] == "like"

    lifecycle = settings.topic(topics.TRIGGERS_LIFECYCLE)
    triggers = collect(
        settings.kafka_bootstrap,
        [lifecycle],
        lambda rs: set(first_seen_users(rs)) >= set(users) or worker.proc.poll() is not None,
        timeout_s=60,
    )
    assert worker.proc.poll() is None, worker.tail()
    assert first_seen_users(triggers) == dict.fromkeys(users, 1), worker.tail()

    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)

    def profile(user: str) -> dict[str, str]:
        fields = client.hgetall(profile_key(settings.redis_key_prefix, user))
        return {str(k): str(v) for k, v in fields.items()}

    def profiles_done() -> bool:
        return all(profile(u).get("event_count") == str(n) for u, n in EXPECTED.items())

    wait_for(profiles_done, 30, worker, "Redis profiles with every replayed event")
    before = {u: profile(u) for u in users}
    for user in users:
        assert before[user]["first_seen"] == str(min(times[user]))
        assert before[user]["last_seen"] == str(max(times[user]))
    assert before["541000004"]["last_seen"] == str(parse_rees46_time("2019-10-01 01:01:50 UTC"))
    assert counters(settings)["events"] == total

    # the same file again, through the command: the same event ids, so nothing counts twice
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
    env.update(settings.to_env())
    command = subprocess.run(
        [sys.executable, "-m", "agents.commands.replay", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 0, command.stderr
    assert f"{total} mapped, {total} sent" in command.stdout, command.stdout
    assert "rejected  1 (unknown_event_type 1)" in command.stdout, command.stdout
    wait_for(
        lambda: (
            counters(settings)["events"] == 2 * total
            and counters(settings)["projection_pending"] == 0
        ),
        30,
        worker,
        "the worker to read the second replay",
    )
    after = {u: profile(u) for u in users}
    assert {u: after[u]["event_count"] for u in users} == {u: str(n) for u, n in EXPECTED.items()}
    assert {u: after[u]["version"] for u in users} == {u: before[u]["version"] for u in users}
    later = collect(settings.kafka_bootstrap, [lifecycle], lambda rs: False, timeout_s=2)
    assert first_seen_users(later) == dict.fromkeys(users, 1)
    client.close()
    assert worker.stop() == 0, worker.tail()
