"""The producer API: publish user events that are valid by construction.

Validation is the pipeline's own (:func:`streams.events.parse_event`), run
before sending, so a producer learns of a bad event at the call site instead
of in the dead-letter topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from agents.errors import InfrastructureError
from agents.kafka.clients import unreachable
from agents.settings import Settings
from streams import topics
from streams.contract import Limits
from streams.events import parse_event


def new_event(
    user_id: str | None,
    event_type: str,
    properties: Mapping[str, Any] | None = None,
    *,
    anonymous_id: str | None = None,
    timestamp_ms: int | None = None,
    event_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An event document with ``event_id`` and ``timestamp`` filled in."""
    doc: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        "type": event_type,
        "timestamp": timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000,
        "properties": dict(properties or {}),
        "context": dict(context or {}),
    }
    if user_id is not None:
        doc["user_id"] = user_id
    if anonymous_id is not None:
        doc["anonymous_id"] = anonymous_id
    return doc


class EventProducer:
    """Validates, keys by user and sends events; flushes on close."""

    def __init__(self, settings: Settings, **kafka_options: Any) -> None:
        self.topic = settings.topic(topics.USER_EVENTS)
        self.limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=settings.max_future_skew_s * 1000,
        )
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap.split(","),
            "acks": "all",
            "linger_ms": 5,
            "max_block_ms": 15_000,
            "client_id": f"{settings.app_id}-producer",
        }
        options.update(kafka_options)
        try:
            self._producer = KafkaProducer(**options)
        except (KafkaError, OSError) as exc:
            raise unreachable(settings.kafka_bootstrap, exc) from None
        self._failed: list[BaseException] = []

    def send(self, doc: Mapping[str, Any]) -> None:
        """Validate ``doc`` (raises :class:`~streams.errors.EventError`) and send it."""
        raw = orjson.dumps(doc)
        event = parse_event(raw, now_ms=time.time_ns() // 1_000_000, limits=self.limits)
        self.send_raw(event.key.encode(), raw)

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are, unvalidated (tests and dead-letter re-publishing)."""
        try:
            future = self._producer.send(self.topic, key=key, value=value)
        except KafkaTimeoutError:
            raise InfrastructureError(
                f"no metadata for topic {self.topic!r} within 15 s: is Kafka up, and does the "
                "topic exist? (`userpulse topics` creates it; check USERPULSE_TOPIC_PREFIX)"
            ) from None
        future.add_errback(self._failed.append)

    def track(
        self,
        user_id: str,
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        """Send one event for ``user_id``; return its ``event_id``."""
        doc = new_event(user_id, event_type, properties, **fields)
        self.send(doc)
        return str(doc["event_id"])

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every sent event is acknowledged; raise if any was not."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise InfrastructureError(f"events could not be delivered to Kafka: {exc}") from exc
        if self._failed:
            failed, self._failed = self._failed, []
            raise InfrastructureError(
                f"{len(failed)} events were not delivered to Kafka; first error: {failed[0]}"
            )

    def close(self) -> None:
        self.flush()
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
