"""A short fetch long-poll for Faust's consumer.

Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed.
aiokafka sends a partition no new fetch while an earlier fetch is in flight
or its records are still buffered; a fetch that includes an idle partition
(the derived topic, mostly) waits on the broker up to that long, and a busy
partition's next records wait with it. Measured at 2,000 events/s offered:
ingest → trigger p50 372 ms and p99 1.9 s with 1,500 ms; p50 57 ms and p99
264 ms with 10 ms (docs/benchmarks.md). :func:`install` lowers it to
:data:`FETCH_MAX_WAIT_MS` for every worker consumer Faust creates afterwards.

What was tried and left out: replacing Faust's per-message
``wait_first(callback(message), suspend_flow.wait())`` in the fetch loop
with a direct ``await`` (a task pair per message is Faust's largest consumer
cost: a bare agent read 12,000 events/s with it and 15,000 without). The
worker then lost records after a recovery: records it delivered while Faust
seeks to the committed offsets are cleared from the stream's queue by
Faust's flow-control resume right after, and are not fetched again when the
seek came first. Cause and fixes to try: docs/development.md.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

#: The broker holds a fetch at most this long when no partition in it has new
#: records (aiokafka's default is 500 ms; Faust's 1,500 ms).
FETCH_MAX_WAIT_MS = 10

_installed = False


def install() -> None:
    """Make every worker consumer Faust creates from now on long-poll for at
    most :data:`FETCH_MAX_WAIT_MS` (idempotent)."""
    global _installed
    if _installed:
        return
    thread = faust_aiokafka.AIOKafkaConsumerThread
    create = thread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), not yet called
        return consumer

    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    _installed = True
