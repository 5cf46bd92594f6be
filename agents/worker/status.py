"""What a worker is doing right now, read from its pipeline for the health
endpoints (:func:`membership`) and for a scrape of ``/metrics``
(:func:`sample`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from faust.types import TP

from agents.worker.health import Membership
from agents.worker.metrics import Sample

if TYPE_CHECKING:
    from agents.worker.pipeline import Pipeline


def sample(pipeline: Pipeline) -> Sample:
    """What the worker holds now, for a scrape of /metrics."""
    app = pipeline.app
    lag = {}
    owned = pipeline.deadlines.owned
    for (topic, number), offset in list(pipeline.read_to.items()):
        if number in owned:
            end = app.consumer.highwater(TP(topic, number))
            if end is not None:
                lag[(topic, number)] = max(0, int(end) - offset)
    recovery: Any = cast(Any, app.tables).recovery
    try:
        active, standby = recovery.active_remaining_total(), recovery.standby_remaining_total()
    except (AttributeError, KeyError, TypeError):  # not started yet
        active = standby = 0
    projection = pipeline.projection
    return Sample(
        lag=lag,
        recovery_active=int(active),
        recovery_standby=int(standby),
        deadlines_pending=pipeline.deadlines.pending,
        deadlines_overdue=pipeline.deadlines.overdue(time.time_ns() // 1_000_000),
        projection_backlog=projection.pending,
        projection_failures=projection.failures,
        projection_written=projection.written,
        commit_backlog=pipeline.committer.backlog,
        partitions=len(owned),
        ready=not pipeline.health.reasons(),
    )


def membership(pipeline: Pipeline) -> Membership:
    """The worker in its consumer group, for the readiness rule."""
    app = pipeline.app
    return Membership(
        rebalancing=bool(app.rebalancing or app.in_recovery),
        recovered=pipeline.recovered,
        partitions=len(pipeline.deadlines.owned),
    )
