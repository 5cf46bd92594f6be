"""A record too big to be dead-lettered as it is (issue #15).

The broker takes a record of ~1.2 MB (the topic's ``max.message.bytes`` is
raised), the worker rejects it (``too_large``) — and its dead letter cannot
carry the original: that is over the producer's request limit (1,000,000
bytes). It is dead-lettered by reference instead, while every valid event
around it, in the same batch and on the same partition, is applied.
"""

from __future__ import annotations

import time

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import committed_everything

pytestmark = pytest.mark.e2e

BIG = 1_200_000


def test_an_oversize_record_is_dead_lettered_by_reference_amid_valid_events(
    settings: Settings, worker: Worker
) -> None:
    source = settings.topic(topics.USER_EVENTS)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, source, {"max.message.bytes": "3000000"})]
        )
    finally:
        admin.close()

    base = time.time_ns() // 1_000_000 - 60_000
    users = [f"u{n}" for n in range(30)]
    per_user = 8

    def event(user: str, n: int) -> bytes:
        doc = {
            "event_id": f"{user}-{n}",
            "type": "page_viewed",
            "user_id": user,
            "timestamp": base + n,
            "properties": {"url": f"/{n}"},
        }
        return orjson.dumps(doc)

    big_doc = {
        "event_id": "big-1",
        "type": "page_viewed",
        "user_id": users[0],
        "timestamp": base,
        "properties": {"blob": "x" * BIG},
    }
    big = orjson.dumps(big_doc)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=4_000_000, linger_ms=50
    )
    # half of every user's events, the oversize record (keyed by users[0], so on
    # the partition of users[0]'s events), then the other half: one batch holds all
    for n in range(per_user // 2):
        for user in users:
            producer.send(source, key=user.encode(), value=event(user, n))
    where = producer.send(source, key=users[0].encode(), value=big)
    for n in range(per_user // 2, per_user):
        for user in users:
            producer.send(source, key=user.encode(), value=event(user, n))
    producer.flush(timeout=30)
    big_meta = where.get(timeout=30)
    valid = len(users) * per_user

    wait_for(
        lambda: (
            counters(settings)["events"] == valid
            and counters(settings)["dead_letters"] == 1
            and counters(settings)["projection_pending"] == 0
        ),
        90,
        worker,
        "every valid event applied and the oversize record dead-lettered",
    )
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    try:
        counts = {
            u: client.hget(profile_key(settings.redis_key_prefix, u), "event_count") for u in users
        }
        assert counts == dict.fromkeys(users, str(per_user)), counts
    finally:
        client.close()

    letters = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.DEAD_LETTERS)],
        lambda rs: len(rs) >= 1,
        timeout_s=30,
    )
    assert len(letters) == 1
    letter = letters[0]
    h = {k: v.decode() for k, v in letter.headers.items()}
    assert h["userpulse.error.code"] == "too_large"
    assert h["userpulse.source.topic"] == source
    assert int(h["userpulse.source.partition"]) == big_meta.partition
    assert int(h["userpulse.source.offset"]) == big_meta.offset
    assert int(h["userpulse.source.size"]) == len(big)
    assert h["userpulse.value.truncated"] == "true"
    assert letter.key == users[0].encode()
    assert letter.value is not None and big.startswith(letter.value)
    assert len(letter.value) < 10_000

    # still consuming: one more event is applied
    producer.send(source, key=b"late", value=event("late", 1)).get(timeout=30)
    producer.close()
    wait_for(lambda: counters(settings)["events"] == valid + 1, 60, worker, "one more event")
    assert counters(settings)["dead_letter_fallbacks"] == 0  # it fitted by reference at once
    # every record committed, the oversize one's batch included (no stall before it)
    wait_for(lambda: committed_everything(settings, source), 60, worker, "the commit")
    assert worker.stop(timeout_s=60) == 0, worker.tail()
