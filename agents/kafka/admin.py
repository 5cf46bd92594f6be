"""Kafka administration a worker needs before it starts: the contract topics
exist, and ``user-events`` has the partition count the tables expect."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.errors import ConfigError, InfrastructureError
from agents.kafka.clients import unreachable
from agents.settings import Settings
from streams import topics

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: retention of the topics userpulse creates: inputs, internal messages and
#: triggers a week (Kafka's default, said explicitly); dead letters a month,
#: time to read, fix and re-publish them (docs/dead-letters.md)
RETENTION_MS = {
    topics.USER_EVENTS: 7 * DAY_MS,
    topics.DERIVED: 7 * DAY_MS,
    topics.DEAD_LETTERS: 30 * DAY_MS,
    **{name: 7 * DAY_MS for name in topics.TRIGGER_TOPICS},
}


def creation_configs(name: str) -> dict[str, str]:
    """The topic configs ``ensure_topics`` creates contract topic ``name`` with."""
    return {"cleanup.policy": "delete", "retention.ms": str(RETENTION_MS[name])}


def admin_client(settings: Settings, timeout_ms: int = 10_000) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id=f"{settings.app_id}-admin",
            request_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError) as exc:
        raise unreachable(settings.kafka_bootstrap, exc) from None


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist."""
    return {
        t["name"]: len(t["partitions"])
        for t in admin.describe_topics(names)
        if t["error_code"] == 0 and t["partitions"]
    }


def ensure_topics(settings: Settings, replication_factor: int = 1) -> list[str]:
    """Create the contract topics that are missing; return the names created.

    Raises :class:`ConfigError` when ``user-events`` exists with a partition
    count other than ``USERPULSE_PARTITIONS`` (the state table must be
    co-partitioned with it).
    """
    contract = {settings.topic(t): t for t in topics.ALL_TOPICS}
    names = list(contract)
    events = settings.topic(topics.USER_EVENTS)
    admin = admin_client(settings)
    try:
        counts = partition_counts(admin, names)
        missing = [n for n in names if n not in counts]
        created: list[str] = []
        for name in missing:
            try:
                configs = creation_configs(contract[name])
                new = NewTopic(name, settings.partitions, replication_factor, topic_configs=configs)
                admin.create_topics([new])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # created meanwhile (another worker, or metadata not yet visible)
        if created:
            logger.info("created topics: %s", ", ".join(created))
        if events not in created:
            _check_partitions(admin, events, settings.partitions)
        return created
    finally:
        admin.close()


def _check_partitions(admin: KafkaAdminClient, events: str, expected: int) -> None:
    for _ in range(50):  # a topic created a moment ago may not be in metadata yet
        count = partition_counts(admin, [events]).get(events)
        if count is not None:
            break
        time.sleep(0.1)
    else:
        raise InfrastructureError(f"topic {events} exists but Kafka does not describe it")
    if count != expected:
        raise ConfigError(
            "USERPULSE_PARTITIONS",
            f"topic {events} has {count} partitions but the setting is {expected}",
            f"set USERPULSE_PARTITIONS={count} (state tables are co-partitioned "
            "with user-events), or use a new USERPULSE_TOPIC_PREFIX",
        )
