"""Kafka clients as userpulse makes them: a consumer that reads topics
without a consumer group, and the one message when Kafka cannot be reached."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from agents.errors import InfrastructureError


def unreachable(bootstrap: str, exc: BaseException) -> InfrastructureError:
    """The error of a client that cannot reach Kafka at ``bootstrap``: what
    failed and how to get a broker."""
    return InfrastructureError(
        f"cannot reach Kafka at {bootstrap} ({exc.__class__.__name__}). "
        "Start it (userpulse stack up) or set USERPULSE_KAFKA_BOOTSTRAP"
    )


def group_free_consumer(bootstrap: str, client_id: str, **options: Any) -> KafkaConsumer:
    """A consumer of ``bootstrap`` in no consumer group, committing nothing:
    its reader assigns the partitions and seeks itself. ``options`` are
    more kafka-python consumer options."""
    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            client_id=client_id,
            **options,
        )
    except (KafkaError, OSError) as exc:
        raise unreachable(bootstrap, exc) from None
