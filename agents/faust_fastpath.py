"""One change to faust-streaming's consumer: no task pair per message.

Faust's fetcher hands each message to the topic conductor with::

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a delivery blocked on a full stream buffer can be abandoned when a
rebalance suspends the flow. ``wait_first`` wraps both coroutines in tasks
and waits on them with ``asyncio.wait`` — for every message, although the
delivery almost never blocks. It is the largest single cost of a Faust
worker's consumer path: a bare agent that only reads and decodes runs at
≈ 12,000 events/s with it and ≈ 15,000 without it here
(docs/benchmarks.md), and because each message then needs several trips
through the event loop, the agent never sees more than one message waiting
— so it cannot batch.

:func:`install` replaces ``Consumer._drain_messages`` with the same loop
that awaits the delivery directly while the flow is not suspended, and keeps
``wait_first`` when it is (a rebalance in progress). The loop is Faust's own
otherwise, line for line. It is installed only over the exact code it was
written against (a hash of the original's source): any other faust-streaming
version keeps its own method, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from typing import Any

from faust.transport import consumer as faust_consumer

logger = logging.getLogger(__name__)

#: sha256 (first 16 hex digits) of the source of
#: ``faust.transport.consumer.Consumer._drain_messages`` this replaces
#: (faust-streaming 0.15.x).
REPLACES = "44a2500309e83c63"

_installed = False


def install() -> bool:
    """Replace Faust's per-message fetch loop; True when it is (or already was)
    replaced, False when this faust-streaming is not the one it was written for."""
    global _installed
    if _installed:
        return True
    original = faust_consumer.Consumer._drain_messages
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()[:16]
    if digest != REPLACES:
        logger.warning(
            "faust fast path not installed: Consumer._drain_messages is not the code it "
            "replaces (source hash %s, expected %s); the worker runs slower but correctly",
            digest,
            REPLACES,
        )
        return False
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    _installed = True
    return True


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
    # Faust's Consumer._drain_messages, but the delivery is awaited directly
    # while the flow is not suspended (see the module docstring).
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    flow_suspended = self.suspend_flow.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if flow_suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)
