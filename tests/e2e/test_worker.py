"""End to end: `userpulse worker` as a process on real Kafka and Redis.

Events go in with kafka-python; the test reads the trigger topic, the
dead-letter topic and the Redis profiles the worker produced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from kafka import KafkaProducer

from agents.admin import ensure_topics
from agents.producer import EventProducer, new_event
from agents.projection import profile_key
from agents.reader import Record, collect
from agents.settings import Settings
from streams import topics
from streams.state import STAGE_ACQUIRED
from streams.triggers import TYPE_STAGE_CHANGED, trigger_id_for

pytestmark = pytest.mark.e2e


class Worker:
    """A `userpulse worker` subprocess with its log."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
        env.update(settings.to_env())
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    ensure_topics(settings)
    w = Worker(settings, tmp_path / "worker.log")
    try:
        yield w
    finally:
        w.stop()


def wait_for(predicate: object, timeout_s: float, worker: Worker, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        assert worker.proc.poll() is None, (
            f"worker exited while waiting for {what}:\n{worker.tail()}"
        )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.tail()}")


def test_worker_turns_events_into_triggers_dead_letters_and_profiles(
    settings: Settings, worker: Worker
) -> None:
    users = ["ada", "bob", "cyd"]
    base = time.time_ns() // 1_000_000 - 10_000
    docs = [
        new_event(u, etype, props, timestamp_ms=base + i * 10)
        for i, (u, etype, props) in enumerate(
            [
                ("ada", "signed_up", {}),
                ("bob", "signed_up", {}),
                ("ada", "page_viewed", {"url": "/"}),
                ("cyd", "session_started", {}),
                ("ada", "product_viewed", {"product_id": "p1"}),
            ]
        )
    ]
    with EventProducer(settings) as producer:
        for doc in docs:
            producer.send(doc)
        # ada's page view delivered twice (a producer retry): must count once
        producer.send(docs[2])

    # a broken record, sent raw so we know its partition and offset
    raw_producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    meta = raw_producer.send(
        settings.topic(topics.USER_EVENTS), key=b"ada", value=b'{"type": "page_viewed"'
    ).get(timeout=30)
    raw_producer.close()

    triggers = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.TRIGGERS_LIFECYCLE)],
        lambda rs: len(rs) >= len(users) or worker.proc.poll() is not None,
        timeout_s=90,
    )
    assert worker.proc.poll() is None, worker.tail()
    by_user = {r.key: r.json() for r in triggers}
    assert sorted(by_user) == [u.encode() for u in users], worker.tail()
    for user in users:
        t = by_user[user.encode()]
        assert t["type"] == TYPE_STAGE_CHANGED
        assert t["reason"]["rule"] == "first_seen" and t["reason"]["to"] == STAGE_ACQUIRED
        assert t["trigger_id"] == trigger_id_for(TYPE_STAGE_CHANGED, user, STAGE_ACQUIRED)
        assert t["emitted_at"] >= t["occurred_at"]

    dead: list[Record] = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.DEAD_LETTERS)],
        lambda rs: len(rs) >= 1,
        timeout_s=30,
    )
    assert len(dead) == 1
    letter = dead[0]
    assert letter.value == b'{"type": "page_viewed"'  # the original bytes, untouched
    assert letter.key == b"ada"
    headers = {k: v.decode() for k, v in letter.headers.items()}
    assert headers["userpulse.error.code"] == "not_json"
    assert headers["userpulse.source.topic"] == settings.topic(topics.USER_EVENTS)
    assert int(headers["userpulse.source.partition"]) == meta.partition
    assert int(headers["userpulse.source.offset"]) == meta.offset

    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    expected_counts = {"ada": 3, "bob": 1, "cyd": 1}

    def profiles_done() -> bool:
        return all(
            client.hget(profile_key(settings.redis_key_prefix, u), "event_count") == str(n)
            for u, n in expected_counts.items()
        )

    wait_for(profiles_done, 30, worker, "Redis profiles")
    ada = client.hgetall(profile_key(settings.redis_key_prefix, "ada"))
    assert ada["stage"] == STAGE_ACQUIRED
    assert ada["first_seen"] == str(base) and ada["last_seen"] == str(base + 40)
    assert ada["version"] == "3"
    client.close()

    # no second trigger for anyone, and the worker is still consuming
    later = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.TRIGGERS_LIFECYCLE)],
        lambda rs: False,
        timeout_s=2,
    )
    assert len(later) == len(users)
    assert worker.proc.poll() is None

    # the worker's own counters agree (served on its web port, used as health probe)
    url = f"http://127.0.0.1:{settings.web_port}/counters/"
    with urllib.request.urlopen(url, timeout=10) as response:
        counters = orjson.loads(response.read())
    assert counters["events"] == len(docs) + 1  # the redelivery was read, not applied twice
    assert counters["dead_letters"] == 1
    assert counters["triggers"] == len(users)
    assert counters["projection_pending"] == 0

    # graceful shutdown on SIGTERM
    assert worker.stop() == 0, worker.tail()
