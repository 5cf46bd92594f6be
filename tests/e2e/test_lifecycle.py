"""Scripted user journeys through a running worker: exact Redis profiles,
index counts and lifecycle trigger sequence; then a SIGKILL, a restart and
more events — the state continues exactly, nothing lost, nothing counted twice.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.kafka.admin import ensure_topics
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.profiles import ProfileReader
from agents.settings import Settings
from streams import topics
from streams.policy import DAY_MS
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e


class Script:
    """Builds each user's events with deterministic ids and times."""

    def __init__(self, base_ms: int) -> None:
        self.base = base_ms
        self.n: dict[str, int] = {}

    def event(self, user: str, etype: str, day: float, **props: Any) -> dict[str, Any]:
        self.n[user] = self.n.get(user, 0) + 1
        return new_event(
            user,
            etype,
            props,
            event_id=f"{user}-{self.n[user]}",
            timestamp_ms=self.base + int(day * DAY_MS),
            context={"channel": "web"},
        )


def order(order_id: str, revenue: float) -> dict[str, Any]:
    return {"order_id": order_id, "revenue": revenue, "currency": "EUR", "products": []}


def lifecycle_triggers(
    settings: Settings, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Lifecycle triggers from the beginning, read until ``until`` holds (or 60 s)."""
    records = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.TRIGGERS_LIFECYCLE)],
        lambda rs: until([r.json() for r in rs]),
        timeout_s=60,
    )
    return [r.json() for r in records]


def stages_of(triggers: list[dict[str, Any]], user: str) -> list[tuple[Any, Any]]:
    return [
        (t["reason"]["from"], t["reason"]["to"])
        for t in triggers
        if t["user_id"] == user and t["type"] == "stage_changed"
    ]


def test_journeys_survive_a_sigkill_exactly(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    base = time.time_ns() // 1_000_000 - 40 * DAY_MS
    s = Script(base)
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    reader = ProfileReader(client, settings.redis_key_prefix)

    first = [
        s.event("alice", "signed_up", 0),
        s.event(
            "alice", "product_added", 1, product_id="p1", quantity=1, price=120.0, cart_id="c1"
        ),
        s.event("alice", "page_viewed", 9),
        s.event("alice", "order_completed", 9.5, **order("o1", 120.0), cart_id="c1"),
        s.event("bob", "signed_up", 0),
        s.event("bob", "page_viewed", 1),
    ]
    worker = Worker(settings, tmp_path / "worker-1.log")
    try:
        with EventProducer(settings) as producer:
            for doc in first:
                producer.send(doc)
        # the referral credit travels another path (the derived topic): send
        # it once alice's own events are in, so the stage order is fixed
        wait_for(lambda: reader.profile("alice").get("orders") == "1", 90, worker, "alice's order")
        with EventProducer(settings) as producer:
            producer.send(s.event("carol", "signed_up", 2, referrer_id="alice"))
        wait_for(
            lambda: (
                reader.profile("alice").get("stage") == "referrer"
                and reader.profile("carol").get("event_count") == "1"
                and reader.profile("bob").get("event_count") == "2"
            ),
            90,
            worker,
            "the first journeys",
        )
        alice = reader.profile("alice")
        assert {
            k: alice[k] for k in ("stage", "orders", "ltv", "tier", "segment", "event_count")
        } == {
            "stage": "referrer",
            "orders": "1",
            "ltv": "120.0",
            "tier": "low",
            "segment": "general_development",
            "event_count": "4",
        }
        assert alice["referrals"] == "1"
        assert reader.profile("bob")["stage"] == "acquired"
        counts = reader.counts()
        assert counts["stage"] == {"acquired": 2, "referrer": 1}
        assert counts["segment"] == {"general_development": 1}

        triggers = lifecycle_triggers(
            settings, lambda ts: len(stages_of(ts, "alice")) >= 5 and stages_of(ts, "carol")
        )
        assert stages_of(triggers, "alice") == [
            (None, "acquired"),
            ("acquired", "activated"),
            ("activated", "retained"),
            ("retained", "monetized"),
            ("monetized", "referrer"),
        ]
        assert stages_of(triggers, "bob") == [(None, "acquired")]
        assert stages_of(triggers, "carol") == [(None, "acquired")]

        # more events, then a SIGKILL right after they are applied — most
        # likely before their offsets were committed
        second = [
            s.event(
                "bob", "product_added", 3, product_id="p2", quantity=2, price=10.0, cart_id="b1"
            ),
            s.event("alice", "order_completed", 10, **order("o2", 100.0)),
        ]
        with EventProducer(settings) as producer:
            for doc in second:
                producer.send(doc)
        wait_for(
            lambda: (
                reader.profile("bob").get("stage") == "activated"
                and reader.profile("alice").get("orders") == "2"
            ),
            60,
            worker,
            "the second batch",
        )
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=30)
    finally:
        worker.stop()

    restarted = Worker(settings, tmp_path / "worker-2.log")
    try:
        third = [
            s.event("bob", "order_completed", 4, **order("o3", 20.0), cart_id="b1"),
            s.event("carol", "page_viewed", 5),
        ]
        with EventProducer(settings) as producer:
            for doc in third:
                producer.send(doc)
        wait_for(
            lambda: (
                reader.profile("bob").get("orders") == "1"
                and reader.profile("carol").get("event_count") == "2"
                and counters(settings)["projection_pending"] == 0
            ),
            120,
            restarted,
            "the events after the restart",
        )
        bob = reader.profile("bob")
        assert (bob["event_count"], bob["stage"], bob["ltv"]) == ("4", "monetized", "20.0")
        assert "cart_value" not in bob  # the order closed the cart
        alice = reader.profile("alice")
        assert (alice["event_count"], alice["orders"], alice["ltv"]) == ("5", "2", "220.0")
        assert alice["tier"] == "mid"
        assert reader.counts()["stage"] == {"acquired": 1, "monetized": 1, "referrer": 1}

        all_triggers = lifecycle_triggers(settings, lambda ts: len(stages_of(ts, "bob")) >= 3)
        assert stages_of(all_triggers, "bob") == [
            (None, "acquired"),
            ("acquired", "activated"),
            ("activated", "monetized"),
        ]
        ids = [t["trigger_id"] for t in all_triggers]
        assert len(ids) == len(set(ids)), "a trigger was emitted twice"

        # erasure: state, profile and index memberships go; the erasure is acknowledged
        with EventProducer(settings) as producer:
            producer.send(s.event("carol", "user_deleted", 6))
        wait_for(lambda: reader.profile("carol") == {}, 60, restarted, "carol's erasure")
        assert reader.counts()["stage"] == {"monetized": 1, "referrer": 1}
        acks = lifecycle_triggers(settings, lambda ts: any(t["type"] == "user_erased" for t in ts))
        [ack] = [t for t in acks if t["type"] == "user_erased"]
        assert ack["user_id"] == "carol" and ack["profile"] == {}
    finally:
        assert restarted.stop() == 0, restarted.tail()

    # a worker on a new machine (an empty data dir): the whole state comes
    # back from the changelog, and events are applied on top of it
    moved = dataclasses.replace(settings, data_dir=tmp_path / "empty-data-dir")
    fresh = Worker(moved, tmp_path / "worker-3.log")
    try:
        with EventProducer(settings) as producer:
            producer.send(s.event("alice", "page_viewed", 11))
        wait_for(
            lambda: reader.profile("alice").get("event_count") == "6",
            120,
            fresh,
            "an event applied after restoring the state from the changelog",
        )
        alice = reader.profile("alice")
        assert (alice["orders"], alice["ltv"], alice["stage"]) == ("2", "220.0", "referrer")
    finally:
        assert fresh.stop() == 0, fresh.tail()
        client.close()
