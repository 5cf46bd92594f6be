"""Topic administration, the producer API and the reader against real Kafka."""

from __future__ import annotations

import dataclasses

import pytest

from agents.errors import ConfigError
from agents.kafka.admin import admin_client, ensure_topics, partition_counts
from agents.kafka.producer import EventProducer
from agents.kafka.reader import collect
from agents.settings import Settings
from streams import topics
from streams.errors import EventError

pytestmark = pytest.mark.integration


def test_ensure_topics_creates_every_contract_topic_with_the_partition_count(
    settings: Settings,
) -> None:
    created = ensure_topics(settings)
    assert sorted(created) == sorted(settings.topic(t) for t in topics.ALL_TOPICS)
    admin = admin_client(settings)
    try:
        counts = partition_counts(admin, created)
    finally:
        admin.close()
    assert set(counts.values()) == {settings.partitions}
    assert ensure_topics(settings) == []  # idempotent


def test_a_partition_mismatch_is_a_config_error_naming_the_key(settings: Settings) -> None:
    ensure_topics(settings)
    with pytest.raises(ConfigError) as info:
        ensure_topics(dataclasses.replace(settings, partitions=settings.partitions + 1))
    assert info.value.key == "USERPULSE_PARTITIONS"
    assert f"USERPULSE_PARTITIONS={settings.partitions}" in info.value.fix


def test_producer_validates_before_sending_and_keys_by_user(settings: Settings) -> None:
    ensure_topics(settings)
    with EventProducer(settings) as producer:
        event_id = producer.track("alice", "page_viewed", {"url": "/"})
        with pytest.raises(EventError):
            producer.send({"type": "page_viewed", "user_id": "bob", "timestamp": 1})
    records = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.USER_EVENTS)],
        lambda rs: len(rs) >= 1,
        timeout_s=20,
    )
    assert len(records) == 1
    assert records[0].key == b"alice"
    assert records[0].json()["event_id"] == event_id
