"""End to end: `userpulse worker` as a process on real Kafka and Redis.

Events go in with kafka-python; the test reads the trigger topic, the
dead-letter topic and the Redis profiles the worker produced.
"""

from __future__ import annotations

import time

import pytest
import redis
from kafka import KafkaProducer

from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import Record, collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.triggers import TYPE_STAGE_CHANGED, trigger_id_for
from streams.userstate import STAGE_ACQUIRED
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e


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
    seen = counters(settings)
    assert seen["events"] == len(docs) + 1  # the redelivery was read, not applied twice
    assert seen["dead_letters"] == 1
    assert seen["triggers"] == len(users)
    assert seen["projection_pending"] == 0

    # graceful shutdown on SIGTERM
    assert worker.stop() == 0, worker.tail()
