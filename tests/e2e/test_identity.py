"""Anonymous activity joins the user's history after identification, across partitions."""

from __future__ import annotations

import time

import pytest
import redis

from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.contract import DEFAULT_LIMITS
from tests.e2e.conftest import Worker, counters, wait_for
from tests.unit.test_depth import record

pytestmark = pytest.mark.e2e


def test_anonymous_history_merges_into_the_user_and_later_anonymous_events_follow(
    settings: Settings, worker: Worker
) -> None:
    anon, user = "anon-7f3e", "user-42"
    base = time.time_ns() // 1_000_000 - 30_000
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)

    def profile(key: str) -> dict[str, str]:
        return client.hgetall(profile_key(settings.redis_key_prefix, key))

    identify = new_event(
        user, "user_identified", {}, anonymous_id=anon, timestamp_ms=base + 300, event_id="id-1"
    )
    with EventProducer(settings) as producer:
        producer.send(
            new_event(None, "page_viewed", {}, anonymous_id=anon, timestamp_ms=base + 100)
        )
        producer.send(
            new_event(
                None,
                "product_viewed",
                {"product_id": "p1"},
                anonymous_id=anon,
                timestamp_ms=base + 200,
            )
        )
        producer.flush()
        wait_for(
            lambda: profile(anon).get("event_count") == "2", 90, worker, "the anonymous profile"
        )
        producer.send(identify)

    wait_for(lambda: profile(user).get("merged_from") == anon, 60, worker, "the merge")
    merged = profile(user)
    assert merged["event_count"] == "3"  # two anonymous events + the identification
    assert merged["first_seen"] == str(base + 100)
    assert merged["last_seen"] == str(base + 300)
    wait_for(lambda: profile(anon).get("merged_into") == user, 30, worker, "the anonymous marker")

    with EventProducer(settings) as producer:
        # the visitor's cookie still sends the anonymous id: forwarded to the user
        producer.send(
            new_event(None, "page_viewed", {}, anonymous_id=anon, timestamp_ms=base + 400)
        )
        producer.send(identify)  # the identification delivered again: nothing changes
    wait_for(
        lambda: counters(settings)["events"] == 5 and counters(settings)["projection_pending"] == 0,
        30,
        worker,
        "the later events",
    )
    wait_for(lambda: profile(user).get("event_count") == "4", 30, worker, "the forwarded event")
    final = profile(user)
    assert final["last_seen"] == str(base + 400)
    assert final["merged_from"] == anon
    assert profile(anon)["event_count"] == "2"  # the anonymous history is not counted again
    client.close()


def test_a_deep_event_of_a_merged_anonymous_id_is_forwarded_at_the_limit_and_dead_lettered_over_it(
    settings: Settings, worker: Worker
) -> None:
    """The probe of issue #15: an event nested ~250 levels deep for an
    anonymous id already merged crashed the agent on its forward."""
    anon, user = "anon-deep", "user-deep"
    base = time.time_ns() // 1_000_000 - 30_000
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)

    def profile(key: str) -> dict[str, str]:
        return client.hgetall(profile_key(settings.redis_key_prefix, key))

    with EventProducer(settings) as producer:
        producer.send(
            new_event(None, "page_viewed", {}, anonymous_id=anon, timestamp_ms=base + 100)
        )
        producer.send(
            new_event(user, "user_identified", {}, anonymous_id=anon, timestamp_ms=base + 200)
        )
    # the two profiles are written apart (the anonymous one may come first)
    wait_for(
        lambda: (
            profile(anon).get("merged_into") == user and profile(user).get("event_count") == "2"
        ),
        90,
        worker,
        "the merge, in both profiles",
    )

    limit = DEFAULT_LIMITS.max_depth
    with EventProducer(settings) as producer:
        producer.send_raw(anon.encode(), record(limit, anon, base + 300))
        producer.send_raw(anon.encode(), record(limit + 1, anon, base + 400))
        producer.send_raw(anon.encode(), record(250, anon, base + 500))
        producer.send(
            new_event(None, "page_viewed", {}, anonymous_id=anon, timestamp_ms=base + 600)
        )
    wait_for(lambda: profile(user).get("event_count") == "4", 60, worker, "the forwarded events")
    assert profile(user)["last_seen"] == str(base + 600)
    wait_for(lambda: counters(settings)["dead_letters"] == 2, 30, worker, "the dead letters")
    letters = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.DEAD_LETTERS)],
        lambda rs: len(rs) >= 2,
        timeout_s=30,
    )
    assert sorted(r.headers["userpulse.error.code"] for r in letters) == [b"too_deep"] * 2
    assert worker.proc.poll() is None, "the worker must still be consuming"
    client.close()
