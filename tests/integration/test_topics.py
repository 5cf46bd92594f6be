"""`userpulse topics` on a real broker: creates the contract topics with the
planned configs, describes every topic of the environment, and `--check`
names what differs from the plan (exit 1) — a retention cut short, a
partition count that does not match USERPULSE_PARTITIONS."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions

from agents.commands.cli import main
from agents.kafka.admin import admin_client
from agents.settings import Settings
from streams import topics

pytestmark = pytest.mark.integration


def rows(output: str) -> dict[str, str]:
    """Topic (unprefixed by the caller) → its table row."""
    return {line.split()[0]: line for line in output.splitlines()[1:] if line.strip()}


def test_topics_creates_describes_and_checks(settings: Settings) -> None:
    env = settings.to_env()
    runner = CliRunner()
    result = runner.invoke(main, ["topics", "--check"], env=env)
    assert result.exit_code == 1  # nothing exists yet
    assert "missing" in rows(result.output)[settings.topic(topics.USER_EVENTS)]

    result = runner.invoke(main, ["topics"], env=env)
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    dlq = table[settings.topic(topics.DEAD_LETTERS)].split()
    assert dlq[1:5] == ["4", "delete", "30", "days"] and dlq[-1] == "ok"
    events = table[settings.topic(topics.USER_EVENTS)].split()
    assert events[1:5] == ["4", "delete", "7", "days"]
    changelog = table[f"{settings.app_id}-user-state-changelog"]
    assert "not yet: the first worker creates it" in changelog

    admin = admin_client(settings)
    try:
        dlq_name = settings.topic(topics.DEAD_LETTERS)
        cut = ConfigResource(ConfigResourceType.TOPIC, dlq_name, {"retention.ms": "3600000"})
        admin.alter_configs([cut])
        admin.create_partitions({settings.topic(topics.TRIGGERS_LIFECYCLE): NewPartitions(6)})
    finally:
        admin.close()
    result = runner.invoke(main, ["topics", "--check"], env=env)
    assert result.exit_code == 1, result.output
    table = rows(result.output)
    assert "retention 1 h, shorter than the 30 days planned" in table[dlq_name]
    assert "6 partitions, 4 planned" in table[settings.topic(topics.TRIGGERS_LIFECYCLE)]
    assert table[settings.topic(topics.USER_EVENTS)].rstrip().endswith("ok")
    # without --check it reports the same and succeeds (Compose's topics service runs it)
    result = runner.invoke(main, ["topics"], env=env)
    assert result.exit_code == 0 and "shorter than the 30 days planned" in result.output
