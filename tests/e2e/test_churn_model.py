"""`userpulse fit` on a running worker's state: the BG/NBD parameters are
fitted from the changelog, published, picked up by the worker, and appear on
the profiles as P(alive) and expected orders."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from agents.commands.cli import main
from agents.kafka.changelog import changelog_topic
from agents.kafka.model_topic import Model
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.redis.profiles import ProfileReader
from agents.settings import Settings
from streams.policy import DAY_MS
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e


def test_fit_publishes_a_model_the_worker_uses(
    settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    rng = random.Random(7)
    now = time.time_ns() // 1_000_000
    sent = 0
    buyers = 600
    with EventProducer(settings, linger_ms=20) as producer:
        for i in range(buyers):  # simulated the BG/NBD way: Poisson buying, dropout after repeats
            user = f"buyer-{i}"
            at = now - rng.randint(150, 500) * DAY_MS
            rate_per_day = rng.gammavariate(1.0, 1 / 5)
            dropout = rng.betavariate(0.5, 1.0)
            for n in range(14):
                doc = {
                    "order_id": f"{user}-o{n}",
                    "revenue": 20.0,
                    "currency": "EUR",
                    "products": [],
                }
                producer.send(
                    new_event(user, "order_completed", doc, timestamp_ms=at, event_id=f"{user}-{n}")
                )
                sent += 1
                at += int(rng.expovariate(rate_per_day) * DAY_MS) + 1
                if at > now - DAY_MS or (n > 0 and rng.random() < dropout):
                    break
    wait_for(lambda: counters(settings)["events"] == sent, 120, worker, "every order")

    result = CliRunner().invoke(
        main, ["fit", "--min-buyers", "100"], env=settings.to_env(), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"BG/NBD fitted on {buyers} buyers" in result.output
    assert "published to" in result.output

    models = collect(
        settings.kafka_bootstrap, [settings.topic("userpulse.model")], lambda rs: len(rs) >= 1
    )
    model = Model.from_json(models[0].value or b"")
    assert model.buyers == buyers and model.unit_days == 7.0
    assert all(v > 0 for v in (model.params.r, model.params.alpha, model.params.a, model.params.b))

    # the worker picks the model up: the next order shows P(alive) on the profile
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    reader = ProfileReader(client, settings.redis_key_prefix)

    def has_model_fields() -> bool:
        with EventProducer(settings) as producer:
            producer.track("buyer-0", "page_viewed")
        time.sleep(0.5)
        return "p_alive" in reader.profile("buyer-0")

    wait_for(has_model_fields, 60, worker, "P(alive) on the profile")
    profile = reader.profile("buyer-0")
    assert 0.0 <= float(profile["p_alive"]) <= 1.0
    assert float(profile["expected_orders_30d"]) >= 0.0
    client.close()


def test_fit_refuses_too_few_buyers_with_a_clear_message(
    settings: Settings, worker: Worker
) -> None:
    with EventProducer(settings) as producer:
        producer.track(
            "only-one",
            "order_completed",
            {"order_id": "o", "revenue": 1.0, "currency": "EUR", "products": []},
        )
    wait_for(lambda: counters(settings)["events"] == 1, 90, worker, "the order")
    result = CliRunner().invoke(main, ["fit"], env=settings.to_env())
    assert result.exit_code == 2
    assert "only 1 buyers in the state; the fit needs at least 200" in result.output
    assert changelog_topic(settings).endswith("-user-state-changelog")
