"""What a worker has done since it started, as ``/counters/`` shows it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from agents.redis.projection import RedisProjection
from agents.worker.committer import Committer
from agents.worker.deadlines import Deadlines
from agents.worker.reprojection import Reprojector


@dataclass
class Counters:
    """The worker's own counts (each one a key of :func:`snapshot`)."""

    events: int = 0
    dead_letters: int = 0
    triggers: int = 0
    timers_fired: int = 0
    send_errors: int = 0
    batches: int = 0
    state_writes: int = 0
    #: records skipped because their user had applied them (after a crash or rebalance)
    redelivered: int = 0


def snapshot(
    counters: Counters,
    committer: Committer,
    deadlines: Deadlines,
    projection: RedisProjection,
    reprojector: Reprojector,
) -> dict[str, Any]:
    """The counts, with what the committer, the deadline index and the Redis
    projection hold right now."""
    return {
        **asdict(counters),
        "commit_backlog": committer.backlog,
        "pending_states": len(committer.pending),
        "changelog_records": committer.changelog_records,
        "dead_letter_fallbacks": committer.dead_letter_fallbacks,
        "timers_pending": deadlines.pending,
        "timer_rebuilds": deadlines.rebuilds,
        "timer_rebuild_running": deadlines.rebuilding,
        "timer_rebuild_s": deadlines.last_rebuild_s,
        "projection_pending": projection.pending,
        "projection_written": projection.written,
        "projection_erased": projection.erased,
        "projection_stale_skipped": projection.stale_skipped,
        "projection_compared": reprojector.compared,
        "projection_restaged": reprojector.restaged,
    }


def install(app: Any, read: Callable[[], dict[str, Any]]) -> None:
    """``GET /counters/`` on the worker's Faust web server: ``read()`` as JSON."""

    # Faust calls a page handler as handler(view, request): a plain function
    async def page(view: Any, request: Any) -> Any:
        return view.json(read())

    app.page("/counters/")(page)
