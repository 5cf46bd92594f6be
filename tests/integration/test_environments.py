"""The start-up refusals of docs/environments.md, on the real Kafka and Redis:
a worker whose data dir, Redis key prefix or consumer group belongs to
another environment stops with one line naming the conflict and the fix,
exit code 2, before it joins the group; the reading commands refuse another
environment's Redis keys the same way."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from agents.environment import (
    MARKER_FILE,
    check_consumer_group,
    claim_data_dir,
    claim_environment,
    claim_redis_prefix,
    identity,
)
from agents.envvars import Secret
from agents.errors import ConfigError
from agents.kafka.admin import admin_client, ensure_topics, partition_counts
from agents.redis.keys import environment_key
from agents.settings import Settings
from streams import topics

pytestmark = pytest.mark.integration


@pytest.fixture
def other(settings: Settings) -> Settings:
    """A second environment beside ``settings``: another topic prefix, and
    so another group and Redis key prefix (and its own data dir)."""
    return Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
        topic_prefix=f"{settings.topic_prefix}other-",
        data_dir=settings.data_dir.with_name("other-data"),
        partitions=settings.partitions,
    )


def refusal(settings: Settings, command: str = "worker", *args: str) -> str:
    """Run ``userpulse COMMAND`` as ``settings``' environment; it must exit 2
    with one line on stderr, which is returned (its ``Fix`` included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
    env.update(settings.to_env())
    done = subprocess.run(
        [sys.executable, "-m", "agents.commands.cli", command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("userpulse: error: ")
    if command == "worker":  # refused before it made anything: not even its topics
        admin = admin_client(settings)
        try:
            names = [settings.topic(t) for t in topics.ALL_TOPICS]
            assert partition_counts(admin, names) == {}
        finally:
            admin.close()
    return lines[0]


def test_a_data_dir_of_another_environment_is_refused(settings: Settings, other: Settings) -> None:
    claim_data_dir(settings)
    marker = settings.data_dir / MARKER_FILE
    assert orjson.loads(marker.read_bytes()) == identity(settings)
    claim_data_dir(settings)  # its own again: fine

    intruder = replace(other, data_dir=settings.data_dir)
    line = refusal(intruder)
    assert f"USERPULSE_DATA_DIR: {settings.data_dir} holds the tables of another environment" in (
        line
    )
    assert f"app id {settings.app_id!r}" in line
    assert "Fix: give this environment a data dir of its own" in line
    assert orjson.loads(marker.read_bytes()) == identity(settings)  # left as it was


def test_an_unmarked_data_dir_is_adopted(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "v1").mkdir()  # written before markers existed
    claim_data_dir(settings)
    assert orjson.loads((settings.data_dir / MARKER_FILE).read_bytes()) == identity(settings)


def test_a_data_dir_it_cannot_use_is_refused_with_the_setting(settings: Settings) -> None:
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.data_dir.write_text("a file, not a directory")
    with pytest.raises(ConfigError) as info:
        claim_data_dir(replace(settings, data_dir=settings.data_dir / "tables"))
    assert info.value.key == "USERPULSE_DATA_DIR"
    assert info.value.problem.startswith(f"cannot use {settings.data_dir / 'tables'} (")


def test_a_memory_store_claims_no_data_dir(settings: Settings, other: Settings) -> None:
    claim_data_dir(settings)
    claim_data_dir(replace(other, data_dir=settings.data_dir, store="memory://"))
    assert orjson.loads((settings.data_dir / MARKER_FILE).read_bytes()) == identity(settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(settings.redis_url.reveal())
    yield c
    c.close()


def test_a_redis_key_prefix_of_another_environment_is_refused(
    settings: Settings, other: Settings, client: redis.Redis
) -> None:
    claim_redis_prefix(settings)
    key = environment_key(settings.redis_key_prefix)
    assert orjson.loads(client.get(key) or b"") == identity(settings)
    claim_redis_prefix(settings)  # its own again: fine

    intruder = replace(other, redis_key_prefix=settings.redis_key_prefix)
    line = refusal(intruder)
    assert (
        f"USERPULSE_REDIS_KEY_PREFIX: Redis keys {settings.redis_key_prefix!r}… belong to "
        "another environment" in line
    )
    assert f"topic prefix {settings.topic_prefix!r}" in line
    assert "Fix: unset USERPULSE_REDIS_KEY_PREFIX to derive one from the topic prefix" in line
    # reading never looks at another environment's keys either
    for command in (["profile", "ada"], ["segments"]):
        assert "belong to another environment" in refusal(intruder, *command)
    assert orjson.loads(client.get(key) or b"") == identity(settings)


def test_a_redis_it_cannot_reach_is_not_a_refusal(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = replace(settings, redis_url=Secret("redis://127.0.0.1:1/0"))
    with caplog.at_level(logging.WARNING, logger="agents.environment"):
        claim_redis_prefix(unreachable)  # the worker runs without Redis and catches up
    assert "Redis key prefix not checked: cannot reach Redis" in caplog.text


def _consumer(settings: Settings, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
    )


def test_a_group_with_members_on_other_topics_is_refused(
    settings: Settings, other: Settings
) -> None:
    ensure_topics(settings)
    member = _consumer(settings, settings.app_id)
    member.subscribe([settings.topic(topics.USER_EVENTS)])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment():
            assert time.monotonic() < deadline, "the member never got its partitions"
            member.poll(timeout_ms=200)
        check_consumer_group(settings)  # its own members: fine

        intruder = replace(other, app_id=settings.app_id)
        line = refusal(intruder)
        assert (
            f"USERPULSE_APP_ID: consumer group {settings.app_id!r} has members consuming "
            f"{settings.topic(topics.USER_EVENTS)}, not topics of this environment" in line
        )
        assert "Fix: give this environment a group of its own" in line
    finally:
        member.close()


def test_a_group_with_offsets_of_other_topics_is_refused(
    settings: Settings, other: Settings
) -> None:
    ensure_topics(settings)
    gone = _consumer(settings, settings.app_id)  # a worker that ran and stopped
    try:
        gone.commit(
            {TopicPartition(settings.topic(topics.USER_EVENTS), 0): OffsetAndMetadata(0, "", -1)}
        )
    finally:
        gone.close()
    check_consumer_group(settings)

    intruder = replace(other, app_id=settings.app_id)
    line = refusal(intruder)
    assert (
        f"USERPULSE_APP_ID: consumer group {settings.app_id!r} has offsets of "
        f"{settings.topic(topics.USER_EVENTS)}, not topics of this environment" in line
    )
    # nor does `userpulse fit` read that group's changelog as this environment's states
    assert refusal(intruder, "fit") == line


def test_two_environments_claim_side_by_side(settings: Settings, other: Settings) -> None:
    """Different prefixes and nothing else set: no claim is in the other's way."""
    for env in (settings, other, settings, other):
        ensure_topics(env)
        claim_environment(env)
    assert settings.data_dir != other.data_dir
    with pytest.raises(ConfigError) as info:
        claim_data_dir(replace(other, data_dir=settings.data_dir))
    assert info.value.key == "USERPULSE_DATA_DIR"
