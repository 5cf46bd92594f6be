"""One input, two runs: a real stream-clock worker on Kafka and `userpulse
backtest` give the same trigger ids and payloads and the same final states.

The input has sign-ups, carts, orders, an identity merge, a referral, an
erasure, consent, deadlines of every kind, and users fed user by user — out
of time order across users. It goes in two phases: the second starts once
the worker has applied the first (its counters) and the merge has landed,
and is later in time than all of the first. That is the one thing a live
run adds: internal messages (merge, credit, forward) travel through a topic,
so an event of the other key sent at that moment could overtake them
(docs/triggers.md, "Back-test and live"); the third phase, a forwarded
event, waits for the user's own last event the same way.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.backtest.run import Backtest
from agents.kafka.admin import ensure_topics
from agents.kafka.changelog import read_states
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.policy import DAY_MS
from streams.userstate import STAGE_ERASED, UserState
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e

T0 = 1_709_542_800_000  # 2024-03-04T09:00:00Z: outside the default quiet hours
H = 3_600_000


def _ev(user: str | None, etype: str, at: int, n: list[int], **kw: Any) -> dict[str, Any]:
    n[0] += 1
    props = kw.pop("props", {})
    return new_event(user, etype, props, timestamp_ms=at, event_id=f"d-{n[0]}", **kw)


def _cart(product: str, cart: str, price: float = 20.0) -> dict[str, Any]:
    return {"product_id": product, "quantity": 1, "price": price, "cart_id": cart}


def _order(order: str, revenue: float, cart: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"order_id": order, "revenue": revenue, "currency": "EUR"}
    doc["products"] = [{"product_id": "p1", "quantity": 1, "price": revenue}]
    if cart is not None:
        doc["cart_id"] = cart
    return doc


def history() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Three phases: each user's events in order, users one after another."""
    n = [0]
    one: list[dict[str, Any]] = []
    # a buyer who orders twice and comes back after a churn warning (fed first,
    # though later in time than the users after it)
    carol = "carol"
    one += [
        _ev(carol, "signed_up", T0 + 5 * H, n, context={"channel": "ads"}),
        _ev(carol, "product_added", T0 + 6 * H, n, props=_cart("p1", "c-carol")),
        _ev(carol, "order_completed", T0 + 7 * H, n, props=_order("o1", 80.0, "c-carol")),
        _ev(carol, "order_completed", T0 + 3 * DAY_MS, n, props=_order("o2", 300.0)),
        _ev(carol, "page_viewed", T0 + 40 * DAY_MS, n),  # after 30 days away: warned, won back
    ]
    # a cart left alone: the whole reminder sequence; never activated beyond it
    one += [
        _ev("alice", "signed_up", T0, n, context={"channel": "seo"}),
        _ev("alice", "product_added", T0 + H, n, props=_cart("p1", "c-alice")),
        _ev("alice", "product_removed", T0 + 2 * H, n, props=_cart("zz", "c-alice")),  # not in it
    ]
    # a sign-up that never activates: the stalled nudges; consent withdrawn
    one += [
        _ev("dave", "signed_up", T0 + H, n),
        _ev("dave", "consent_updated", T0 + 2 * H, n, props={"channels": {"email": False}}),
    ]
    # erasure: seen, erased
    one += [
        _ev("erin", "session_started", T0 + 2 * H, n),
        _ev("erin", "product_added", T0 + 3 * H, n, props=_cart("p2", "c-erin")),
        _ev("erin", "user_deleted", T0 + 4 * H, n),
    ]
    # an anonymous visitor who is identified later
    one += [
        _ev(None, "page_viewed", T0 + 8 * H, n, anonymous_id="anon-9"),
        _ev(None, "product_added", T0 + 9 * H, n, anonymous_id="anon-9", props=_cart("p3", "c-9")),
        _ev("frank", "user_identified", T0 + 10 * H, n, anonymous_id="anon-9"),
    ]
    # phase two, later in time than all of phase one
    later = T0 + 45 * DAY_MS
    two = [
        _ev("bob", "signed_up", later, n, props={"referrer_id": "alice"}),
        _ev("frank", "order_completed", later + 2 * H, n, props=_order("o3", 45.0, "c-9")),
        _ev("carol", "order_completed", later + 3 * H, n, props=_order("o4", 120.0)),
    ]
    # phase three, once frank's order is applied: the visitor's cookie still
    # sends the anonymous id, and the event is forwarded to frank
    three = [_ev(None, "page_viewed", later + 4 * H, n, anonymous_id="anon-9")]
    return one, two, three


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def comparable(state: UserState) -> dict[str, Any]:
    """A state as both runs must agree on it: all but the revision (a write
    counter: the live worker decides deadlines while idle between the phases,
    a change of its own, where the back-test decides them with the next event)
    and the input offsets applied (Kafka's offsets in one, line numbers and
    none for internal messages in the other)."""
    ignored = ("revision", "events_offset", "derived_offset")
    return {name: getattr(state, name) for name in state.__slots__ if name not in ignored}


def trigger_view(doc: dict[str, Any]) -> tuple[str, bytes]:
    doc = {k: v for k, v in doc.items() if k != "emitted_at"}
    return doc["trigger_id"], orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def test_a_stream_clock_worker_and_the_back_test_agree(settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, clock="stream")
    one, two, three = history()
    everything = one + two + three
    path = write_jsonl(tmp_path / "history.jsonl", everything)

    # the back-test first: the prediction (in-process, and as the command)
    predicted = Backtest(partitions=settings.partitions, keep_triggers=True)
    for doc in everything:
        key = (doc.get("user_id") or doc.get("anonymous_id")).encode()
        predicted.feed_raw(key, orjson.dumps(doc))
    predicted.finish()
    assert predicted.dead_letters == 0
    expected = dict(trigger_view(orjson.loads(_encoded(t))) for t in predicted.kept or [])
    kinds = {orjson.loads(v)["type"] for v in expected.values()}
    assert {"cart_abandoned", "activation_stalled", "churn_warning", "win_back"} <= kinds
    assert {"stage_changed", "segment_changed", "user_erased"} <= kinds
    command = subprocess.run(
        [sys.executable, "-m", "agents.commands.cli", "backtest", str(path), "--partitions",
         str(settings.partitions), "--csv", str(tmp_path / "predicted.csv")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert command.returncode == 0, command.stderr
    csv_ids = {
        line.split(",")[0] for line in (tmp_path / "predicted.csv").read_text().splitlines()[1:]
    }
    assert csv_ids == set(expected)

    # the live run: phase one is on the topic before the worker starts
    ensure_topics(settings)
    with EventProducer(settings) as producer:
        for doc in one:
            producer.send(doc)
        producer.flush()
    worker = Worker(settings, tmp_path / "worker.log")
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    try:
        wait_for(lambda: counters(settings)["events"] == len(one), 90, worker, "phase one")
        frank = profile_key(settings.redis_key_prefix, "frank")
        wait_for(lambda: client.hget(frank, "merged_from") == "anon-9", 30, worker, "the merge")
        with EventProducer(settings) as producer:
            for doc in two:
                producer.send(doc)
            producer.flush()
        done = len(one) + len(two)
        wait_for(lambda: counters(settings)["events"] == done, 60, worker, "phase two")
        wait_for(lambda: client.hget(frank, "orders") == "1", 30, worker, "frank's order")
        with EventProducer(settings) as producer:
            for doc in three:
                producer.send(doc)
            producer.flush()
        wait_for(
            lambda: (
                counters(settings)["events"] == len(everything)
                and counters(settings)["triggers"] >= len(expected)
            ),
            90,
            worker,
            "every event applied and as many triggers as predicted",
        )
        sent = counters(settings)["triggers"]
        names = [settings.topic(t) for t in topics.TRIGGER_TOPICS]
        records = collect(settings.kafka_bootstrap, names, lambda rs: len(rs) >= sent)
        live = dict(trigger_view(orjson.loads(r.value)) for r in records)
        assert len(records) == len(live)  # no trigger sent twice
        assert sorted(live) == sorted(expected), _difference(live, expected)
        for trigger_id, doc in expected.items():
            assert live[trigger_id] == doc, trigger_id

        want = {
            s.user_id: comparable(s) for s in predicted.states.values() if s.stage != STAGE_ERASED
        }
        deadline = time.monotonic() + 30
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the changelog catches up with the last batch
            got = {s.user_id: comparable(s) for s in read_states(settings, timeout_s=30)}
            if got == want:
                break
            time.sleep(0.2)
        assert got == want
    finally:
        worker.stop()


def _encoded(trigger: Any) -> bytes:
    from streams.triggers import encode_trigger

    return encode_trigger(trigger, emitted_at_ms=0)


def _difference(live: dict[str, bytes], expected: dict[str, bytes]) -> str:
    def show(docs: dict[str, bytes], ids: set[str]) -> list[str]:
        out = []
        for i in sorted(ids):
            d = orjson.loads(docs[i])
            out.append(f"{d['type']} {d['user_id']} at {d['occurred_at']}: {d['reason']}")
        return out

    only_live = show(live, set(live) - set(expected))
    only_predicted = show(expected, set(expected) - set(live))
    return (
        "live only:\n  "
        + "\n  ".join(only_live)
        + "\npredicted only:\n  "
        + "\n  ".join(only_predicted)
    )
