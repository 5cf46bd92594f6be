"""Two environments side by side on one broker and one Redis, configured as
an operator would: the same settings but for the topic prefix (and the web
port: one host). The same user ids and event ids go into both, with other
contents; the second starts while the first runs with its state (issue 16:
it used to join the first's group and take its event ids for duplicates).
Each gets exactly the triggers the back-test predicts for its own input and
profiles of its own state — none of the other's, in Redis and as
``userpulse profile`` shows them; and a third worker that reuses one's
consumer group is refused while that one runs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.backtest.run import Backtest
from agents.kafka.admin import ensure_topics
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from agents.stack.network import free_port
from streams import topics
from streams.policy import DAY_MS
from streams.triggers import encode_trigger
from tests.conftest import Endpoints
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e

T0 = 1_709_542_800_000  # 2024-03-04T09:00:00Z: outside the default quiet hours
H = 3_600_000
USERS = ("alice", "bob", "carol")


def _cart(cart: str) -> dict[str, Any]:
    return {"product_id": "p1", "quantity": 1, "price": 20.0, "cart_id": cart}


def _order(order: str, revenue: float) -> dict[str, Any]:
    return {"order_id": order, "revenue": revenue, "currency": "EUR",
            "products": [{"product_id": "p1", "quantity": 1, "price": revenue}]}  # fmt: skip


def history(shop: str) -> list[dict[str, Any]]:
    """Event ids e-1 … e-9 and the users of :data:`USERS` in both shops; what
    the users do differs."""
    a = shop == "a"
    steps = [
        ("alice", "signed_up", T0, {}),
        ("alice", "product_added", T0 + H, _cart("c1")) if a else
        ("alice", "order_completed", T0 + H, _order("o1", 99.0)),
        ("bob", "signed_up", T0 + H, {}),
        ("bob", "order_completed", T0 + 2 * H, _order("o2", 30.0)) if a else
        ("bob", "page_viewed", T0 + 2 * H, {"url": "/"}),
        ("carol", "signed_up", T0 + 2 * H, {}),
        ("carol", "order_completed", T0 + 3 * H, _order("o3", 10.0 if a else 500.0)),
        ("alice", "page_viewed", T0 + 3 * DAY_MS, {"url": "/"}),
        ("bob", "page_viewed", T0 + 3 * DAY_MS, {"url": "/"}),
        ("carol", "order_completed", T0 + 4 * DAY_MS, _order("o4", 20.0)) if a else
        ("carol", "page_viewed", T0 + 4 * DAY_MS, {"url": "/"}),
    ]  # fmt: skip
    return [
        new_event(user, etype, props, timestamp_ms=at, event_id=f"e-{i}")
        for i, (user, etype, at, props) in enumerate(steps, 1)
    ]


def environment(endpoints: Endpoints, prefix: str, tmp_path: Path, **more: str) -> Settings:
    """The settings of one environment on the shared broker and Redis: only
    the prefix and the web port differ; the data dir is one template."""
    return Settings.from_env(
        {
            "USERPULSE_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            "USERPULSE_REDIS_URL": endpoints.redis_url,
            "USERPULSE_TOPIC_PREFIX": prefix,
            "USERPULSE_DATA_DIR": str(tmp_path / "{prefix}data"),
            "USERPULSE_WEB_PORT": str(free_port()),
            "USERPULSE_PARTITIONS": "4",
            "USERPULSE_SESSION_TIMEOUT_S": "8",
            "USERPULSE_CLOCK": "stream",
            **more,
        }
    )


def predicted(settings: Settings, events: list[dict[str, Any]]) -> tuple[Backtest, dict[str, Any]]:
    """The back-test of ``events``: its final states and the triggers by id
    (without the send time)."""
    run = Backtest(partitions=settings.partitions, keep_triggers=True)
    for doc in events:
        run.feed_raw(doc["user_id"].encode(), orjson.dumps(doc))
    run.finish()
    triggers = (orjson.loads(encode_trigger(t, emitted_at_ms=0)) for t in run.kept or [])
    return run, {t["trigger_id"]: _view(t) for t in triggers}


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "emitted_at"}


def _caught_up(settings: Settings, events: int, triggers: int) -> Callable[[], bool]:
    def done() -> bool:
        seen = counters(settings)
        return bool(seen["events"] == events and seen["triggers"] >= triggers)

    return done


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``userpulse ARGS`` as ``settings``' environment would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
    return subprocess.run(
        [sys.executable, "-m", "agents.commands.cli", *args],
        env={**env, **settings.to_env()}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_two_environments_on_one_broker_and_one_redis_never_mix(
    stack_endpoints: Endpoints, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    envs = {shop: environment(stack_endpoints, f"t{run}{shop}-", tmp_path) for shop in "ab"}
    a, b = envs["a"], envs["b"]
    assert (a.app_id, a.redis_key_prefix, a.data_dir) != (b.app_id, b.redis_key_prefix, b.data_dir)
    inputs = {shop: history(shop) for shop in envs}
    assert [e["event_id"] for e in inputs["a"]] == [e["event_id"] for e in inputs["b"]]
    expected = {shop: predicted(envs[shop], inputs[shop]) for shop in envs}
    ids_a, ids_b = set(expected["a"][1]), set(expected["b"][1])
    assert ids_a - ids_b and ids_b - ids_a, "the inputs must differ in what they trigger"

    workers: dict[str, Worker] = {}
    client = redis.Redis.from_url(stack_endpoints.redis_url, decode_responses=True)
    try:
        # a runs and has its state before b starts beside it: b must neither
        # join a's group nor restore a's state (and so its event ids)
        for shop, settings in envs.items():
            ensure_topics(settings)
            workers[shop] = Worker(settings, tmp_path / f"worker-{shop}.log")
            with EventProducer(settings) as producer:
                for doc in inputs[shop]:
                    producer.send(doc)
                producer.flush()
            wait_for(
                _caught_up(settings, len(inputs[shop]), len(expected[shop][1])),
                90,
                workers[shop],
                f"environment {shop}: every event applied and its triggers sent",
            )

        for shop, settings in envs.items():
            backtest, triggers = expected[shop]
            sent = counters(settings)["triggers"]
            names = [settings.topic(t) for t in topics.TRIGGER_TOPICS]
            records = collect(settings.kafka_bootstrap, names, lambda rs, n=sent: len(rs) >= n)
            live = {doc["trigger_id"]: _view(doc) for doc in (r.json() for r in records)}
            assert len(records) == len(live) == len(triggers), shop  # all its own, nothing else
            assert live == triggers, shop

            def profiles_done(s: Settings = settings, states: Any = backtest.states) -> bool:
                return all(
                    client.hget(profile_key(s.redis_key_prefix, state.user_id), "event_count")
                    == str(state.event_count)
                    for state in states.values()
                )

            wait_for(profiles_done, 30, workers[shop], f"environment {shop}: profiles")
            for state in backtest.states.values():
                profile = client.hgetall(profile_key(settings.redis_key_prefix, state.user_id))
                assert (profile["orders"], profile["stage"], float(profile["ltv"])) == (
                    str(state.order_count),
                    state.stage,
                    state.ltv,
                ), (shop, state.user_id)
            # the reading commands resolve the same environment from the same settings
            shown = _cli(settings, "profile", "carol")
            assert shown.returncode == 0, shown.stderr
            carol = next(s for s in backtest.states.values() if s.user_id == "carol")
            fields = orjson.loads(shown.stdout)
            assert (fields["orders"], float(fields["ltv"])) == (
                str(carol.order_count),
                carol.ltv,
            ), shop
        assert {s.user_id for s in expected["a"][0].states.values()} == set(USERS)

        # a third worker reusing a's consumer group is refused while a runs
        c = environment(stack_endpoints, f"t{run}c-", tmp_path, USERPULSE_APP_ID=a.app_id)
        refused = _cli(c, "worker")
        assert refused.returncode == 2, refused.stderr
        assert (
            f"consumer group {a.app_id!r} has members consuming {a.topic(topics.USER_EVENTS)}"
            in refused.stderr
        )
        assert all(w.proc.poll() is None for w in workers.values())
    finally:
        client.close()
        for w in workers.values():
            w.stop()
