"""Timed triggers on wall-clock time with second-scale delays, for real:
each arrives once, within 2 s of its deadline, never after the exit event,
and a worker restart between a cart change and its deadline still fires it once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from agents.kafka.admin import ensure_topics
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.settings import Settings
from streams import topics
from tests.e2e.conftest import Worker, wait_for

pytestmark = pytest.mark.e2e

POLICY = """
[cart]
reminder_delays_s = [2, 4]

[activation]
stalled_after_s = [3]

[churn]
inactivity_s = 0

[delivery]
quiet_hours = []
daily_cap = 0
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def cart_reminders(settings: Settings, until: Any, timeout_s: float = 30) -> list[dict[str, Any]]:
    records = collect(
        settings.kafka_bootstrap,
        [
            settings.topic(topics.TRIGGERS_CART_ABANDONMENT),
            settings.topic(topics.TRIGGERS_ACTIVATION_STALLED),
        ],
        lambda rs: until([r.json() for r in rs]),
        timeout_s=timeout_s,
    )
    return [r.json() for r in records]


def start_ready_worker(settings: Settings, log: Path, probe: str) -> Worker:
    """A worker that has its partitions: a probe user's first trigger came out."""
    worker = Worker(settings, log)
    with EventProducer(settings) as producer:
        producer.track(probe, "page_viewed")
    records = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.TRIGGERS_LIFECYCLE)],
        lambda rs: any(r.key == probe.encode() for r in rs) or worker.proc.poll() is not None,
        timeout_s=90,
    )
    assert any(r.key == probe.encode() for r in records), worker.tail()
    return worker


def test_reminders_arrive_once_on_time_and_stop_on_exit(settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = dataclasses.replace(settings, policy_file=policy)
    ensure_topics(settings)
    worker = start_ready_worker(settings, tmp_path / "worker.log", "probe-1")
    try:
        t = now_ms()
        item = {"product_id": "p1", "quantity": 1, "price": 10.0}
        with EventProducer(settings) as producer:
            producer.send(
                new_event("ann", "product_added", {**item, "cart_id": "a1"}, timestamp_ms=t)
            )
            producer.send(
                new_event("bo", "product_added", {**item, "cart_id": "b1"}, timestamp_ms=t)
            )
            producer.send(new_event("cy", "signed_up", {}, timestamp_ms=t))
        # bo orders before the first deadline: the exit event
        time.sleep(0.5)
        with EventProducer(settings) as producer:
            order = {
                "order_id": "o1",
                "revenue": 10.0,
                "currency": "EUR",
                "products": [],
                "cart_id": "b1",
            }
            producer.send(new_event("bo", "order_completed", order, timestamp_ms=now_ms()))

        def complete(ts: list[dict[str, Any]]) -> bool:
            return len([x for x in ts if x["user_id"] == "ann"]) >= 2 and any(
                x["user_id"] == "cy" for x in ts
            )

        triggers = cart_reminders(settings, complete)
        assert complete(triggers), worker.tail()
        wait_for(lambda: now_ms() > t + 7_000, 10, worker, "past every deadline")
        triggers = cart_reminders(settings, lambda ts: False, timeout_s=2)

        ann = [x for x in triggers if x["user_id"] == "ann"]
        assert [x["payload"]["step"] for x in ann] == [1, 2], "each reminder exactly once"
        for reminder, delay_ms in zip(ann, (2_000, 4_000), strict=True):
            assert reminder["type"] == "cart_abandoned"
            assert reminder["occurred_at"] == t + delay_ms  # decided at the deadline
            late = reminder["emitted_at"] - reminder["occurred_at"]
            assert 0 <= late <= 2_000, f"emitted {late} ms after the deadline"
            assert reminder["payload"]["value"] == 10.0
        assert [x for x in triggers if x["user_id"] == "bo"] == [], "nothing after the order"
        [cy] = [x for x in triggers if x["user_id"] == "cy"]
        assert cy["type"] == "activation_stalled" and cy["occurred_at"] == t + 3_000
        assert 0 <= cy["emitted_at"] - cy["occurred_at"] <= 2_000
    finally:
        assert worker.stop() == 0, worker.tail()


def test_a_restart_between_cart_change_and_deadline_still_fires_once(
    settings: Settings, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.replace("[2, 4]", "[6, 8]"))
    settings = dataclasses.replace(settings, policy_file=policy)
    ensure_topics(settings)
    worker = start_ready_worker(settings, tmp_path / "worker-1.log", "probe-2")
    t = now_ms()
    with EventProducer(settings) as producer:
        producer.send(
            new_event(
                "dee",
                "product_added",
                {"product_id": "p", "quantity": 2, "price": 5.0, "cart_id": "d"},
                timestamp_ms=t,
            )
        )
    time.sleep(1.0)  # applied, deadline 5 s away
    assert worker.stop() == 0, worker.tail()  # a graceful restart (a deploy)

    restarted = Worker(settings, tmp_path / "worker-2.log")
    try:
        triggers = cart_reminders(
            settings, lambda ts: len([x for x in ts if x["user_id"] == "dee"]) >= 2, timeout_s=60
        )
        time.sleep(1.0)
        triggers = cart_reminders(settings, lambda ts: False, timeout_s=2)
        dee = [x for x in triggers if x["user_id"] == "dee"]
        assert [x["payload"]["step"] for x in dee] == [1, 2], restarted.tail()
        assert [x["occurred_at"] for x in dee] == [t + 6_000, t + 8_000]
        assert len({x["trigger_id"] for x in dee}) == 2
    finally:
        assert restarted.stop() == 0, restarted.tail()
