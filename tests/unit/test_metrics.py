"""The worker's Prometheus metrics as a batch updates them, and the gauges a
scrape reads (agents/worker/metrics.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agents.worker.metrics import Live, Metrics, Sample
from streams.batch import Batch, DeadLetter, Record
from streams.errors import EventError
from streams.triggers import Trigger

T0 = 1_767_225_600_000


def trigger(kind: str, at_ms: int) -> Trigger:
    return Trigger(
        trigger_id=f"{kind}-{at_ms}",
        type=kind,
        topic="triggers.lifecycle",
        user_id="u1",
        occurred_at_ms=at_ms,
        reason={},
        profile={},
        payload={},
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_batch_counts_by_type_and_code_and_times_its_triggers() -> None:
    metrics = Metrics()
    batch = Batch(types={"page_viewed": 3, "order_completed": 1}, redelivered=2)
    batch.dead_letters.append(DeadLetter(Record(b"k", b"x", 7), EventError("not_json", "$", "x")))
    batch.triggers += [trigger("stage_changed", T0 - 40), trigger("stage_changed", T0 - 4_000)]
    batch.writes[b"u1"] = None  # type: ignore[assignment]  # only counted here
    metrics.batch("t-user-events", 6, batch, ingest_ms=T0 - 20, emitted_ms=T0)
    got = samples(metrics)
    assert got[("userpulse_events_total", (("type", "page_viewed"),))] == 3
    assert got[("userpulse_events_total", (("type", "order_completed"),))] == 1
    assert got[("userpulse_dead_letters_total", (("code", "not_json"),))] == 1
    assert got[("userpulse_triggers_total", (("type", "stage_changed"),))] == 2
    assert got[("userpulse_state_writes_total", ())] == 1
    assert got[("userpulse_redelivered_records_total", ())] == 2
    assert got[("userpulse_batch_records_sum", (("topic", "t-user-events"),))] == 6
    event_time = (("since", "event_time"),)
    assert got[("userpulse_trigger_latency_seconds_sum", event_time)] == 4.04
    assert got[("userpulse_trigger_latency_seconds_bucket", (("le", "0.05"), *event_time))] == 1
    ingest = (("since", "ingest"),)
    assert got[("userpulse_trigger_latency_seconds_count", ingest)] == 2
    assert got[("userpulse_trigger_latency_seconds_sum", ingest)] == 0.04


def test_the_gauges_are_read_when_scraped() -> None:
    metrics = Metrics()
    state = {"backlog": 5}
    reads: list[int] = []

    def sample() -> Sample:
        reads.append(1)
        return Sample(
            lag={("t-user-events", 0): 12, ("t-user-events", 3): 0},
            recovery_active=100,
            recovery_standby=0,
            deadlines_pending=40,
            deadlines_overdue=2,
            projection_backlog=state["backlog"],
            projection_failures=1,
            projection_written=77,
            commit_backlog=3,
            partitions=2,
            ready=False,
        )

    metrics.registry.register(Live(sample))
    assert not reads  # registering reads nothing: the worker is not built yet
    got = samples(metrics)
    lag = "userpulse_consumer_lag_records"
    assert got[(lag, (("partition", "0"), ("topic", "t-user-events")))] == 12
    assert got[(lag, (("partition", "3"), ("topic", "t-user-events")))] == 0
    assert got[("userpulse_recovery_remaining_records", (("kind", "active"),))] == 100
    assert got[("userpulse_deadlines_overdue", ())] == 2
    assert got[("userpulse_projection_failures_total", ())] == 1
    assert got[("userpulse_ready", ())] == 0
    assert got[("userpulse_projection_backlog", ())] == 5
    state["backlog"] = 0  # read again at the next scrape, not remembered
    assert samples(metrics)[("userpulse_projection_backlog", ())] == 0


def test_the_operations_docs_list_every_metric() -> None:
    from pathlib import Path

    from agents.worker.metrics import FAMILIES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for name, kind in FAMILIES.items():
        shown = f"{name}_total" if kind == "counter" else name
        assert f"| `{shown}` | {kind} |" in docs, name
