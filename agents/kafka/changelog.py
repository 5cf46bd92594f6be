"""The state table's changelog topic, read back: every user's latest state
(for ``userpulse fit`` and the tests that compare a worker's states)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import TopicPartition

from agents.errors import InfrastructureError, UserpulseError
from agents.kafka.clients import group_free_consumer
from agents.settings import Settings
from streams.codec import decode_state
from streams.errors import StateError
from streams.userstate import STAGE_ERASED, UserState


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog ``{app id}-{table}-changelog``."""
    return f"{settings.app_id}-user-state-changelog"


def read_states(settings: Settings, timeout_s: float = 600.0) -> Iterator[UserState]:
    """Every user's latest state, read from the changelog up to its current end."""
    topic = changelog_topic(settings)
    consumer = group_free_consumer(settings.kafka_bootstrap, "userpulse-fit")
    try:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise UserpulseError(
                f"no state changelog {topic!r}: has a worker with USERPULSE_APP_ID="
                f"{settings.app_id} run yet?"
            )
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        latest: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise InfrastructureError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if record.key is not None:
                        latest[record.key] = record.value
    finally:
        consumer.close()
    for raw in latest.values():
        if raw is None:
            continue
        try:
            state = decode_state(raw)
        except StateError:
            continue
        if state.stage != STAGE_ERASED:
            yield state
