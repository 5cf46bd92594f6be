"""An example notification service: reads userpulse triggers and "sends" them.

It shows what docs/triggers.md asks of a consumer:

- read with ``isolation_level="read_committed"`` in a consumer group, with
  auto-commit off, and commit the offsets only after the records were handled
  — delivery is at-least-once, so a crash before the commit means the
  records come again;
- de-duplicate by ``trigger_id`` (the same condition always has the same id,
  on a redelivery and on a replay of history): with a Redis ``SET NX`` with
  an expiry — shared by every instance of the service and surviving restarts,
  the robust choice — or, for a single process, a bounded in-memory cache
  with a time to live;
- skip what must not be sent: ``payload.delivery.deliverable == false`` (no
  consent for the channel);
- personalise from the trigger's own ``profile`` and ``payload``.

Run it next to a worker (``userpulse demo`` starts one)::

    python docs/examples/notification_consumer.py --bootstrap 127.0.0.1:9092 \\
        --redis redis://127.0.0.1:6379/0          # or --memory for the in-memory cache

It prints what it would send instead of sending it.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

#: Contract topic names (a deployment may prefix them: USERPULSE_TOPIC_PREFIX).
TOPICS = (
    "triggers.lifecycle",
    "triggers.cart-abandonment",
    "triggers.churn-warning",
    "triggers.activation-stalled",
)
#: How long a trigger id is remembered. Longer than any redelivery or replay
#: you expect to overlap with live traffic; a week is generous.
DEDUP_TTL_S = 7 * 86_400


# ---- de-duplication ------------------------------------------------------------
class SeenIds(Protocol):
    def claim(self, trigger_id: str) -> bool:
        """True the first time ``trigger_id`` is claimed (within the TTL)."""

    def release(self, trigger_id: str) -> None:
        """Forget a claim whose sending failed, so that a redelivery retries."""


class RedisSeenIds:
    """``SET userpulse:sent:<trigger_id> 1 NX EX <ttl>``: atomic, shared by every
    instance of the service, survives restarts. The robust choice."""

    def __init__(self, url: str, ttl_s: int = DEDUP_TTL_S, prefix: str = "notify:sent:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.ttl_s = ttl_s
        self.prefix = prefix

    def claim(self, trigger_id: str) -> bool:
        return bool(self.client.set(self.prefix + trigger_id, b"1", nx=True, ex=self.ttl_s))

    def release(self, trigger_id: str) -> None:
        self.client.delete(self.prefix + trigger_id)


class MemorySeenIds:
    """A bounded cache with a time to live (an OrderedDict in claim order).

    Good for one process: a restart, or another instance of the service,
    does not know what this one sent."""

    def __init__(
        self,
        ttl_s: float = DEDUP_TTL_S,
        max_size: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self.clock = clock
        self._claimed: OrderedDict[str, float] = OrderedDict()

    def claim(self, trigger_id: str) -> bool:
        now = self.clock()
        while self._claimed:  # drop what expired (the oldest come first)
            oldest, at = next(iter(self._claimed.items()))
            if now - at < self.ttl_s and len(self._claimed) < self.max_size:
                break
            del self._claimed[oldest]
        if trigger_id in self._claimed:
            return False
        self._claimed[trigger_id] = now
        return True

    def release(self, trigger_id: str) -> None:
        self._claimed.pop(trigger_id, None)


# ---- handling ------------------------------------------------------------------
def handle(trigger: Mapping[str, Any], seen: SeenIds, send: Callable[[str], None]) -> str:
    """Decide what to do with one trigger; returns what was done (for logs and tests):
    ``sent``, ``duplicate``, ``not_deliverable`` or ``ignored``."""
    delivery = trigger.get("payload", {}).get("delivery")
    if delivery is not None and delivery.get("deliverable") is False:
        return "not_deliverable"  # no consent for the channel: never send
    message = render(trigger)
    if message is None:
        return "ignored"
    if not seen.claim(trigger["trigger_id"]):
        return "duplicate"  # a redelivery, or a replay of history
    try:
        send(message)
    except Exception:
        seen.release(trigger["trigger_id"])  # let the redelivery retry it
        raise
    return "sent"


def render(trigger: Mapping[str, Any]) -> str | None:
    """The message for a trigger, personalised from its profile and payload
    (None: nothing to send for this type)."""
    user = trigger["user_id"]
    payload = trigger.get("payload", {})
    profile = trigger.get("profile", {})
    kind = trigger["type"]
    if kind == "cart_abandoned":
        items = ", ".join(f"{i['quantity']}× {i['product_id']}" for i in payload["items"])
        return (
            f"to {user}: reminder {payload['step']} — your cart ({items}, "
            f"{payload['value']:.2f}) is waiting"
            + (" — finish your checkout" if payload["checkout_started"] else "")
        )
    if kind == "activation_stalled":
        return f"to {user}: nudge {payload['step']} — here is how to get started"
    if kind == "churn_warning":
        tier = profile.get("tier")
        return f"to {user}: we miss you (priority {payload['priority']}, {tier} tier)"
    if kind == "win_back":
        return f"to {user}: welcome back after {payload['gone_days']:g} days"
    if kind == "stage_changed" and trigger["reason"]["to"] == "monetized":
        return f"to {user}: thank you for your first order"
    return None  # other lifecycle changes: a CRM would update the contact here


# ---- the consumer loop -----------------------------------------------------------
def consume(bootstrap: str, group_id: str, prefix: str, seen: SeenIds) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        *(prefix + topic for topic in TOPICS),
        bootstrap_servers=bootstrap.split(","),
        group_id=group_id,
        enable_auto_commit=False,  # commit only what was handled
        isolation_level="read_committed",  # never see records of aborted transactions
        auto_offset_reset="earliest",
        key_deserializer=lambda raw: raw.decode() if raw is not None else None,
    )
    running = True

    def stop(signum: int, frame: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while running:
            batch = consumer.poll(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    trigger = json.loads(record.value)
                    outcome = handle(trigger, seen, lambda message: print(message, flush=True))
                    if outcome != "sent":
                        print(f"  ({trigger['type']} {trigger['trigger_id']}: {outcome})")
            if batch:
                consumer.commit()  # after handling: a crash before this re-delivers the batch
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--group", default="notifications", help="consumer group id")
    parser.add_argument("--prefix", default="", help="the deployment's topic prefix")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for trigger ids")
    where.add_argument("--memory", action="store_true", help="remember trigger ids in memory")
    args = parser.parse_args(argv)
    seen: SeenIds = MemorySeenIds() if args.memory else RedisSeenIds(args.redis)
    consume(args.bootstrap, args.group, args.prefix, seen)


if __name__ == "__main__":
    main()
