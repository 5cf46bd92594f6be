"""A worker's Prometheus metrics, served at ``GET /metrics`` (every name,
type and label is listed in docs/operations.md).

Counted as batches pass (:meth:`Metrics.batch`, a few dict updates per
batch, never per record): events by type, dead letters by code, triggers by
type, state writes, batch sizes and two latency histograms. Read when
scraped (:class:`Live`, nothing on the hot path): consumer lag per
partition, table recovery left, deadlines pending and overdue, the Redis
projection's backlog and failures, the commit backlog, readiness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from streams.batch import Batch

#: every metric family a worker serves and its type (docs/operations.md lists
#: the same; the dashboard in deploy/grafana/ uses no other)
FAMILIES = {
    "userpulse_events": "counter",
    "userpulse_dead_letters": "counter",
    "userpulse_triggers": "counter",
    "userpulse_state_writes": "counter",
    "userpulse_redelivered_records": "counter",
    "userpulse_batch_records": "histogram",
    "userpulse_trigger_latency_seconds": "histogram",
    "userpulse_consumer_lag_records": "gauge",
    "userpulse_recovery_remaining_records": "gauge",
    "userpulse_deadlines_pending": "gauge",
    "userpulse_deadlines_overdue": "gauge",
    "userpulse_projection_backlog": "gauge",
    "userpulse_projection_failures": "counter",
    "userpulse_projection_writes": "counter",
    "userpulse_commit_backlog": "gauge",
    "userpulse_partitions": "gauge",
    "userpulse_ready": "gauge",
}
#: latency buckets, in seconds: from a batch's wait to a timer's tick and beyond
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: records per engine batch (USERPULSE_BATCH_MAX_EVENTS is 1,000 by default)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """The counters and histograms a worker updates once per batch."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        # not described at registration: the live gauges are read only when scraped
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.events = Counter(
            "userpulse_events", "Events applied, by event type", ["type"], registry=r
        )
        self.dead_letters = Counter(
            "userpulse_dead_letters", "Input records dead-lettered, by code", ["code"], registry=r
        )
        self.triggers = Counter(
            "userpulse_triggers", "Triggers emitted, by trigger type", ["type"], registry=r
        )
        self.state_writes = Counter(
            "userpulse_state_writes", "User states written (one per user per batch)", registry=r
        )
        self.redelivered = Counter(
            "userpulse_redelivered_records",
            "Input records skipped as already applied (after a crash or rebalance)",
            registry=r,
        )
        self.batch_records = Histogram(
            "userpulse_batch_records",
            "Input records per engine batch",
            ["topic"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "userpulse_trigger_latency_seconds",
            "From the trigger's event time (since=event_time), or from the ingest time of "
            "the first record of the batch that decided it (since=ingest), to its emission",
            ["since"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._event_latency = self.latency.labels(since="event_time")
        self._ingest_latency = self.latency.labels(since="ingest")

    def batch(
        self, topic: str, records: int, batch: Batch, ingest_ms: int, emitted_ms: int
    ) -> None:
        """One engine batch of ``records`` input records of ``topic``, the
        first ingested at ``ingest_ms``, its triggers emitted at ``emitted_ms``."""
        self.batch_records.labels(topic=topic).observe(records)
        for event_type, n in batch.types.items():
            self.events.labels(type=event_type).inc(n)
        for letter in batch.dead_letters:
            self.dead_letters.labels(code=letter.error.code).inc()
        if batch.writes:
            self.state_writes.inc(len(batch.writes))
        if batch.redelivered:
            self.redelivered.inc(batch.redelivered)
        if batch.triggers:
            by_type: dict[str, int] = {}
            since_ingest = max(0.0, (emitted_ms - ingest_ms) / 1000)
            for trigger in batch.triggers:
                by_type[trigger.type] = by_type.get(trigger.type, 0) + 1
                self._event_latency.observe(max(0.0, (emitted_ms - trigger.occurred_at_ms) / 1000))
                self._ingest_latency.observe(since_ingest)
            for trigger_type, n in by_type.items():
                self.triggers.labels(type=trigger_type).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Sample:
    """What the worker holds right now, for one scrape."""

    #: (topic, partition) → records behind the partition's end
    lag: dict[tuple[str, int], int]
    recovery_active: int
    recovery_standby: int
    deadlines_pending: int
    deadlines_overdue: int
    projection_backlog: int
    projection_failures: int
    projection_written: int
    commit_backlog: int
    partitions: int
    ready: bool


class Live(Collector):
    """The gauges of :class:`Sample`, read from the worker when scraped."""

    def __init__(self, sample: Callable[[], Sample]) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Metric]:
        s = self.sample()
        lag = GaugeMetricFamily(
            "userpulse_consumer_lag_records",
            "Records of each input partition this worker owns not processed yet",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(s.lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        recovery = GaugeMetricFamily(
            "userpulse_recovery_remaining_records",
            "Changelog records left to read into the tables (active: owned partitions; "
            "standby: replicas)",
            labels=["kind"],
        )
        recovery.add_metric(["active"], s.recovery_active)
        recovery.add_metric(["standby"], s.recovery_standby)
        yield recovery
        yield _gauge(
            "userpulse_deadlines_pending", "Users with a deadline ahead", s.deadlines_pending
        )
        yield _gauge(
            "userpulse_deadlines_overdue",
            "Users whose deadline has passed and is not decided yet",
            s.deadlines_overdue,
        )
        yield _gauge(
            "userpulse_projection_backlog",
            "Users whose Redis profile write or erasure is staged, not applied yet",
            s.projection_backlog,
        )
        failures = CounterMetricFamily(
            "userpulse_projection_failures", "Redis projection flushes that failed (retried)"
        )
        failures.add_metric([], s.projection_failures)
        yield failures
        written = CounterMetricFamily(
            "userpulse_projection_writes", "Profile writes applied to Redis"
        )
        written.add_metric([], s.projection_written)
        yield written
        yield _gauge(
            "userpulse_commit_backlog",
            "Batches decided whose outputs are not all acknowledged yet",
            s.commit_backlog,
        )
        yield _gauge(
            "userpulse_partitions", "Input partitions assigned to this worker", s.partitions
        )
        yield _gauge("userpulse_ready", "1 when GET /health/ready answers 200", int(s.ready))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc)
    gauge.add_metric([], value)
    return gauge


def install(app: Any, metrics: Metrics, sample: Callable[[], Sample]) -> None:
    """``GET /metrics`` on the worker's Faust web server."""
    metrics.registry.register(Live(sample))

    # Faust calls a page handler as handler(view, request): a plain function
    async def scrape(view: Any, request: Any) -> Any:
        body, content_type = metrics.exposition()
        # aiohttp refuses a charset inside content_type: the header carries it whole
        return view.bytes(body, headers={"Content-Type": content_type})

    app.page("/metrics")(scrape)
