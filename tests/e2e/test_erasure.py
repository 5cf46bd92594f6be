"""Erasure through a real worker (issue #15): the user's and the merged
anonymous history's state and Redis profiles go, the changelog keeps no id
in what stays, and a returning user's triggers have new ids."""

from __future__ import annotations

import time

import pytest
import redis

from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams.codec import decode_state
from streams.userstate import STAGE_ERASED
from tests.e2e.conftest import Worker, counters, wait_for
from tests.e2e.test_lifecycle import lifecycle_triggers

pytestmark = pytest.mark.e2e


def test_an_erased_user_takes_the_merged_history_along_and_comes_back_with_new_ids(
    settings: Settings, worker: Worker
) -> None:
    anon, user = "anon-er", "ana-er"
    base = time.time_ns() // 1_000_000 - 60_000
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)

    def profile(key: str) -> dict[str, str]:
        return client.hgetall(profile_key(settings.redis_key_prefix, key))

    with EventProducer(settings) as producer:
        producer.send(new_event(None, "page_viewed", {}, anonymous_id=anon, timestamp_ms=base))
        producer.send(
            new_event(user, "user_identified", {}, anonymous_id=anon, timestamp_ms=base + 100)
        )
    wait_for(lambda: profile(anon).get("merged_into") == user, 90, worker, "the merge")
    wait_for(lambda: profile(user).get("merged_from") == anon, 30, worker, "the merged user")

    with EventProducer(settings) as producer:
        producer.send(new_event(user, "user_deleted", {}, timestamp_ms=base + 200))
    wait_for(
        lambda: profile(user) == {} and profile(anon) == {},
        60,
        worker,
        "both profiles erased",
    )

    changelog = f"{settings.app_id}-user-state-changelog"

    def latest() -> dict[bytes, bytes | None]:
        records = collect(settings.kafka_bootstrap, [changelog], lambda rs: False, timeout_s=5)
        return {r.key: r.value for r in records if r.key is not None}

    wait_for(
        lambda: all(
            (v := latest().get(k)) is not None and decode_state(v).stage == STAGE_ERASED
            for k in (user.encode(), anon.encode())
        ),
        60,
        worker,
        "the erasure markers on the changelog",
    )
    for key in (user.encode(), anon.encode()):
        value = latest()[key]
        assert value is not None
        marker = decode_state(value)
        assert marker.user_id == "" and marker.event_count == 0 and marker.merged_into is None
        assert user.encode() not in value and anon.encode() not in value, value

    with EventProducer(settings) as producer:  # the user comes back
        producer.send(new_event(user, "signed_up", {}, timestamp_ms=base + 300))
    wait_for(lambda: profile(user).get("event_count") == "1", 60, worker, "the new history")
    assert "merged_from" not in profile(user)

    def stage_ids(ts: list[dict[str, object]]) -> list[object]:
        return [
            t["trigger_id"] for t in ts if t["user_id"] == user and t["type"] == "stage_changed"
        ]

    triggers = lifecycle_triggers(settings, lambda ts: len(stage_ids(ts)) >= 2)
    first, second = stage_ids(triggers)[:2]
    assert first != second, "the returning user's stage_changed must have a new id"
    assert counters(settings)["projection_pending"] == 0
    client.close()
