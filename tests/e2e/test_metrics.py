"""`GET /metrics` of a real worker while events flow (docs/operations.md,
"Metrics"): every metric the docs list is there, and the ones traffic moves
are non-zero — events by type, dead letters by code, triggers by type,
state writes, batch sizes, both latency histograms, lag per partition,
deadlines, the Redis projection — and they agree with `/counters/`."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from agents.worker.metrics import FAMILIES
from benchmarks.generator import generate
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer

pytestmark = pytest.mark.e2e


def scrape(settings: Settings) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family → (sample name, labels) → value."""
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    found: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("userpulse_"):
            assert FAMILIES.get(family.name) == family.type, family.name
            found[family.name] = {
                (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
            }
    return found


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (sample, _labels), v in samples.items() if sample == name)


def test_metrics_show_the_traffic_that_flowed(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    data = generate(3_000, 300, seed=5, partitions=settings.partitions)  # history up to now
    keys = [*data.keys, b"bad-1", b"bad-2"]
    values = [*data.values, b"{not json", b'{"type": "page_viewed"}']
    worker = Worker(settings, tmp_path / "worker.log")
    producer = SteadyProducer(settings, keys, values, step=500, pause_s=0.05).start()
    try:
        producer.wait(120)
        wait_for(
            lambda: (
                counters(settings)["events"] == len(data.values)
                and counters(settings)["dead_letters"] == 2
            ),
            120,
            worker,
            "every event applied and both bad records dead-lettered",
        )
        wait_for(lambda: counters(settings)["projection_pending"] == 0, 60, worker, "Redis")
        seen = counters(settings)
        found = scrape(settings)
    finally:
        producer.close()
        assert worker.stop() == 0, worker.tail()

    assert set(found) == set(FAMILIES)
    events = found["userpulse_events"]
    assert total(events, "userpulse_events_total") == seen["events"] == len(data.values)
    by_type = {dict(labels)["type"] for (name, labels) in events if name.endswith("_total")}
    assert {"page_viewed", "product_added", "order_completed"} <= by_type
    codes = {
        dict(labels)["code"]: v
        for (name, labels), v in found["userpulse_dead_letters"].items()
        if name.endswith("_total")
    }
    assert codes == {"not_json": 1, "missing_field": 1}
    assert total(found["userpulse_triggers"], "userpulse_triggers_total") == seen["triggers"] > 0
    writes = total(found["userpulse_state_writes"], "userpulse_state_writes_total")
    assert writes == seen["state_writes"] > 0
    batches = found["userpulse_batch_records"]
    assert total(batches, "userpulse_batch_records_count") >= 1
    assert total(batches, "userpulse_batch_records_sum") >= len(values)
    latency = found["userpulse_trigger_latency_seconds"]
    for since in ("event_time", "ingest"):
        count = latency[("userpulse_trigger_latency_seconds_count", (("since", since),))]
        assert count == seen["triggers"], since
    lag = found["userpulse_consumer_lag_records"]
    assert lag and all(v == 0 for v in lag.values())  # everything read by the end
    assert {dict(labels)["partition"] for _name, labels in lag} == {
        str(p) for p in range(settings.partitions)
    }
    assert total(found["userpulse_deadlines_pending"], "userpulse_deadlines_pending") > 0
    assert total(found["userpulse_projection_writes"], "userpulse_projection_writes_total") > 0
    assert total(found["userpulse_projection_backlog"], "userpulse_projection_backlog") == 0
    assert total(found["userpulse_partitions"], "userpulse_partitions") == settings.partitions
    assert total(found["userpulse_ready"], "userpulse_ready") == 1
