"""The paper's CDNOW fit, through the whole system: lifetimes' CDNOW_sample
(2357 customers) replayed through a real stream-clock worker on Kafka —
the 39-week calibration period, one `order_completed` per customer-day —
then `userpulse fit` as a process reads the worker's state changelog and
publishes r, α, a, b within 1 % of Fader, Hardie & Lee (2005)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from kafka import KafkaConsumer, TopicPartition

from agents.commands.fit import Population
from agents.commands.options import parse_time
from agents.errors import UserpulseError
from agents.kafka.changelog import read_states
from agents.kafka.model_topic import AS_OF_OPTION, AS_OF_STREAM, MODEL_TOPIC, Model
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import collect
from agents.settings import Settings
from tests.e2e.conftest import Worker, counters, wait_for
from tests.unit.test_fit import PAPER, PAPER_AS_OF, cdnow_customer_days, day_ms

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Replayed history: the worker (and `userpulse fit`) on the stream clock."""
    return dataclasses.replace(settings, clock="stream")


def fit_process(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`userpulse fit ARGS` as its own process, configured like the worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
    env.update(settings.to_env())
    return subprocess.run(
        [sys.executable, "-m", "agents.commands.cli", "fit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def models_published(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        part = TopicPartition(settings.topic(MODEL_TOPIC), 0)
        return int(consumer.end_offsets([part])[part])
    finally:
        consumer.close()


def assert_the_papers_parameters(model: Model) -> None:
    for name in ("r", "alpha", "a", "b"):
        got, want = getattr(model.params, name), getattr(PAPER, name)
        assert abs(got / want - 1) < 0.01, f"{name} = {got:.4f}, the paper's {want}"


def test_cdnow_replayed_through_a_stream_clock_worker_fits_the_papers_parameters(
    settings: Settings, worker: Worker
) -> None:
    days = cdnow_customer_days()  # calibration: orders up to 1997-09-30
    customers = {customer for customer, _, _ in days}
    assert (len(customers), len(days)) == (2357, 2357 + 2457)  # the paper's repeat purchases
    with EventProducer(settings, linger_ms=20) as producer:
        for customer, date, dollars in days:  # in time order, as a replay publishes them
            order = {
                "order_id": f"cdnow-{customer}-{date}",
                "revenue": dollars,
                "currency": "USD",
                "products": [],
            }
            producer.send(
                new_event(
                    f"cdnow-{customer}",
                    "order_completed",
                    order,
                    timestamp_ms=day_ms(date),
                    event_id=f"cdnow-{customer}-{date}",
                )
            )

    def every_order_in_the_state() -> bool:
        try:
            population = Population.of(read_states(settings, timeout_s=30))
        except UserpulseError:  # no changelog yet
            return False
        orders = sum(count for _, _, count in population.buyers)
        return (len(population.buyers), orders) == (len(customers), len(days))

    # the worker's counter first (cheap to ask), then what `userpulse fit` reads
    wait_for(lambda: counters(settings)["events"] == len(days), 180, worker, "every order")
    wait_for(every_order_in_the_state, 60, worker, "every order in the state changelog")

    # as of the paper's calibration end, chosen explicitly
    fitted = fit_process(settings, "--as-of", PAPER_AS_OF)
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    assert f"BG/NBD fitted on {len(customers)} buyers" in fitted.stdout
    assert f"as of {PAPER_AS_OF} (--as-of)" in fitted.stdout
    topic = settings.topic(MODEL_TOPIC)
    [record] = collect(settings.kafka_bootstrap, [topic], lambda rs: len(rs) >= 1)
    explicit = Model.from_json(record.value or b"")
    assert_the_papers_parameters(explicit)
    assert (explicit.as_of_ms, explicit.as_of_source) == (parse_time(PAPER_AS_OF), AS_OF_OPTION)
    assert explicit.buyers == len(customers) and explicit.unit_days == 7.0

    # without --as-of, on the stream clock: as of the stream time, the last calibration day
    fitted = fit_process(settings)
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    assert f"as of {PAPER_AS_OF} (stream time: the newest event time in the state)" in (
        fitted.stdout
    )
    records = collect(settings.kafka_bootstrap, [topic], lambda rs: len(rs) >= 2)
    stream = Model.from_json(records[1].value or b"")
    assert (stream.as_of_ms, stream.as_of_source) == (parse_time(PAPER_AS_OF), AS_OF_STREAM)
    assert dataclasses.astuple(stream.params) == pytest.approx(dataclasses.astuple(explicit.params))

    # the same history fitted on the wall clock (the bug of issue 11): refused, not published;
    # an as-of before some buyers' last orders is refused too (tests/unit/test_fit.py)
    refused = fit_process(dataclasses.replace(settings, clock="wall"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "degenerate fit, nothing was published: ages beyond the data" in refused.stderr
    assert models_published(settings) == 2
