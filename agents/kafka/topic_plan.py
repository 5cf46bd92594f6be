"""What every topic of a userpulse environment should be — partitions,
retention, cleanup — and what it is: ``userpulse topics`` creates the
missing ones (:func:`agents.kafka.admin.ensure_topics`) and describes and
checks them all (docs/operations.md, "Topics")."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from kafka.admin import ConfigResource, ConfigResourceType

from agents.kafka.admin import DAY_MS, RETENTION_MS
from agents.kafka.changelog import changelog_topic
from agents.kafka.model_topic import MODEL_TOPIC
from agents.settings import Settings

#: the configs a description shows
SHOWN = ("cleanup.policy", "retention.ms", "min.cleanable.dirty.ratio")


@dataclass(frozen=True)
class Planned:
    """A topic as userpulse wants it (None: anything goes)."""

    name: str
    partitions: int | None
    cleanup: str
    retention_ms: int | None
    #: who creates it when missing: None for ``userpulse topics`` and every
    #: worker, else who does (a missing one is then no problem)
    created_by: str | None = None


@dataclass(frozen=True)
class Found:
    """A topic as the cluster describes it, and what differs from the plan."""

    planned: Planned
    partitions: int | None  # None: the topic does not exist
    configs: dict[str, str]
    problems: tuple[str, ...]
    note: str = ""


def plan(settings: Settings) -> list[Planned]:
    """Every topic of ``settings``' environment."""
    planned = [
        Planned(settings.topic(name), settings.partitions, "delete", retention)
        for name, retention in RETENTION_MS.items()
    ]
    # Faust creates the state table's changelog, compacted: the latest state per user
    planned.append(
        Planned(changelog_topic(settings), settings.partitions, "compact", None, "the first worker")
    )
    # the churn model's versions, one partition, compacted (agents/kafka/model_topic.py)
    planned.append(Planned(settings.topic(MODEL_TOPIC), 1, "compact", None, "userpulse fit"))
    return planned


def compare(planned: Planned, partitions: int | None, configs: dict[str, str]) -> Found:
    """What differs between ``planned`` and the topic as found."""
    problems: list[str] = []
    if partitions is None:
        if planned.created_by is not None:
            return Found(planned, None, configs, (), f"not yet: {planned.created_by} creates it")
        problems.append("missing")
    else:
        if planned.partitions is not None and partitions != planned.partitions:
            problems.append(f"{partitions} partitions, {planned.partitions} planned")
        cleanup = configs.get("cleanup.policy", "")
        if planned.cleanup not in cleanup.split(","):
            problems.append(f"cleanup.policy {cleanup or '(none)'}, expected {planned.cleanup}")
        retention = configs.get("retention.ms")
        planned_ms = planned.retention_ms
        kept_ms = int(retention) if retention is not None else -1  # -1: forever
        if planned_ms is not None and 0 <= kept_ms < planned_ms:
            problems.append(
                f"retention {_duration(kept_ms)}, shorter than the {_duration(planned_ms)} planned"
            )
    return Found(planned, partitions, configs, tuple(problems))


def describe(admin: object, settings: Settings, *, created: Collection[str] = ()) -> list[Found]:
    """Every planned topic as the cluster of ``admin`` (a KafkaAdminClient)
    has it; ``created``: topics created a moment ago, waited for (up to 10 s)
    until the cluster's metadata shows them."""
    from kafka import KafkaAdminClient

    assert isinstance(admin, KafkaAdminClient)
    planned = plan(settings)
    names = [p.name for p in planned]
    deadline = time.monotonic() + 10
    while True:
        existing = set(admin.list_topics())
        counts = {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics([n for n in names if n in existing])
            if t["error_code"] == 0 and t["partitions"]
        }
        if set(created) <= set(counts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names if n in counts]
    described = admin.describe_configs(resources, config_filter="all") if resources else {}
    by_topic = described.get("topic", {})
    found = []
    for p in planned:
        raw = by_topic.get(p.name, {})
        configs = {k: str(raw[k]["value"]) for k in SHOWN if k in raw}
        found.append(compare(p, counts.get(p.name), configs))
    return found


def _duration(ms: int) -> str:
    if ms < 0:
        return "forever"
    if ms % DAY_MS == 0:
        days = ms // DAY_MS
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{ms / 3_600_000:g} h"


def table(found: list[Found]) -> str:
    """The description as an aligned table, one row per topic."""
    rows = [("TOPIC", "PARTITIONS", "CLEANUP", "RETENTION", "DIRTY RATIO", "STATUS")]
    for f in found:
        retention = f.configs.get("retention.ms")
        if "delete" not in f.configs.get("cleanup.policy", "delete"):
            retention = None  # a compacted topic keeps the latest record of every key
        rows.append(
            (
                f.planned.name,
                "-" if f.partitions is None else str(f.partitions),
                f.configs.get("cleanup.policy", "-"),
                _duration(int(retention)) if retention is not None else "-",
                f.configs.get("min.cleanable.dirty.ratio", "-")
                if f.planned.cleanup == "compact"
                else "",
                "; ".join(f.problems) if f.problems else f.note or "ok",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
