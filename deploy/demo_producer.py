"""Publish sample users' events to ``user-events`` (the compose ``demo-producer`` service).

    python deploy/demo_producer.py [COUNT] [--interval SECONDS] [--wait SECONDS]

Settings come from the ``USERPULSE_*`` environment, like every userpulse
process. Every sample user signs up once, then keeps coming back: a session,
a product view, an add to cart, and on two visits out of three an order.
The third visit leaves its cart behind, which later fires a
cart-abandonment trigger.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from agents.errors import InfrastructureError
from agents.kafka.producer import EventProducer
from agents.settings import Settings
from streams.errors import UserpulseError

log = logging.getLogger("demo-producer")

USERS = ("demo-alice", "demo-bob", "demo-chen", "demo-dana", "demo-emeka")
PRODUCTS = (("sku-tea", 12.5), ("sku-mug", 19.9), ("sku-kettle", 49.0))
CONTEXT = {"channel": "web", "campaign": {"source": "demo", "medium": "compose"}}
RETRY_S = 3.0

#: (user_id, event type, properties)
Event = tuple[str, str, dict[str, Any]]


def sample_events() -> Iterator[Event]:
    """An endless, deterministic stream of sample events."""
    for user in USERS:
        yield user, "signed_up", {"method": "email"}
    for visit in itertools.count(1):
        for i, user in enumerate(USERS):
            product_id, price = PRODUCTS[(visit + i) % len(PRODUCTS)]
            item = {"product_id": product_id, "quantity": 1, "price": price}
            yield user, "session_started", {}
            yield user, "product_viewed", {"product_id": product_id}
            yield user, "product_added", {**item, "cart_id": f"cart-{user}-{visit}"}
            if (visit + i) % 3:  # every third visit abandons its cart
                order = {
                    "order_id": f"order-{user}-{visit}",
                    "revenue": price,
                    "currency": "EUR",
                    "products": [item],
                }
                yield user, "order_completed", order


def connect(settings: Settings, wait_s: float) -> EventProducer:
    """An :class:`EventProducer`, retrying while Kafka is not reachable yet."""
    deadline = time.monotonic() + wait_s
    kafka_log = logging.getLogger("kafka")
    kafka_log.setLevel(logging.CRITICAL)  # our one line per attempt says it all
    try:
        while True:
            try:
                return EventProducer(settings)
            except InfrastructureError as exc:
                if time.monotonic() + RETRY_S > deadline:
                    raise
                log.warning("Kafka is not ready yet, retrying in %.0f s: %s", RETRY_S, exc)
                time.sleep(RETRY_S)
    finally:
        kafka_log.setLevel(logging.WARNING)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "count", nargs="?", type=_positive_int, default=200, help="events to publish (200)"
    )
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between events (0.2)")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to keep retrying Kafka at start (120)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    try:
        settings = Settings.from_env()
        log.info("connecting to Kafka at %s", settings.kafka_bootstrap)
        with connect(settings, args.wait) as producer:
            log.info("publishing %d events to %s", args.count, producer.topic)
            events = itertools.islice(sample_events(), args.count)
            for n, (user_id, event_type, properties) in enumerate(events, 1):
                producer.track(user_id, event_type, properties, context=CONTEXT)
                if n % 25 == 0 or n == args.count:
                    log.info("published %d/%d events", n, args.count)
                time.sleep(args.interval)
    except UserpulseError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    log.info("done; follow the results with: userpulse tail triggers.lifecycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
