"""The topic plan's comparison and table (agents/kafka/topic_plan.py)."""

from __future__ import annotations

from agents.kafka.admin import DAY_MS, creation_configs
from agents.kafka.topic_plan import Planned, compare, plan, table
from agents.settings import Settings
from streams import topics

EVENTS = Planned("p-user-events", 8, "delete", 7 * DAY_MS)
CHANGELOG = Planned("p-userpulse-user-state-changelog", 8, "compact", None, "the first worker")


def test_the_plan_covers_every_contract_topic_the_changelog_and_the_model() -> None:
    settings = Settings(topic_prefix="p-", partitions=8)
    names = {p.name for p in plan(settings)}
    assert {settings.topic(t) for t in topics.ALL_TOPICS} <= names
    assert "p-userpulse-user-state-changelog" in names and "p-userpulse.model" in names
    assert creation_configs(topics.DEAD_LETTERS) == {
        "cleanup.policy": "delete",
        "retention.ms": str(30 * DAY_MS),
    }


def test_what_differs_is_named() -> None:
    good = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    assert compare(EVENTS, 8, good).problems == ()
    assert compare(EVENTS, 8, {**good, "retention.ms": "-1"}).problems == ()  # forever is longer
    assert compare(EVENTS, 8, {**good, "retention.ms": str(14 * DAY_MS)}).problems == ()
    assert compare(EVENTS, 4, good).problems == ("4 partitions, 8 planned",)
    short = compare(EVENTS, 8, {**good, "retention.ms": str(DAY_MS)})
    assert short.problems == ("retention 1 day, shorter than the 7 days planned",)
    compacted = compare(EVENTS, 8, {**good, "cleanup.policy": "compact"})
    assert compacted.problems == ("cleanup.policy compact, expected delete",)
    assert compare(EVENTS, None, {}).problems == ("missing",)


def test_a_topic_someone_else_creates_may_be_missing() -> None:
    missing = compare(CHANGELOG, None, {})
    assert missing.problems == () and missing.note == "not yet: the first worker creates it"
    both = compare(CHANGELOG, 8, {"cleanup.policy": "compact,delete"})
    assert both.problems == ()
    assert compare(CHANGELOG, 8, {"cleanup.policy": "delete"}).problems == (
        "cleanup.policy delete, expected compact",
    )


def test_the_table_shows_a_row_per_topic() -> None:
    found = [
        compare(EVENTS, 8, {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}),
        compare(CHANGELOG, 8, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.5"}),
    ]
    lines = table(found).splitlines()
    assert lines[0].split() == [
        "TOPIC",
        "PARTITIONS",
        "CLEANUP",
        "RETENTION",
        "DIRTY",
        "RATIO",
        "STATUS",
    ]
    assert lines[1].split()[:5] == ["p-user-events", "8", "delete", "1", "day"]
    assert lines[1].endswith("retention 1 day, shorter than the 7 days planned")
    assert lines[2].split() == [
        "p-userpulse-user-state-changelog",
        "8",
        "compact",
        "-",
        "0.5",
        "ok",
    ]
