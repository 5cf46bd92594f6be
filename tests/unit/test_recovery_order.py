"""The end of a recovery (agents/worker/recovery.py): the input partitions are
sought to their committed offsets and the stream queues cleared before the
partitions are resumed — with fakes for Faust's app, consumer and tables.
(The scenario that lost records with Faust's order runs on real Kafka:
tests/faults/test_scaling.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from agents.settings import Settings
from agents.worker.pipeline import Pipeline
from agents.worker.recovery import Recovery, TableManager

EVENTS = TP("events", 0)
DERIVED = TP("events.derived", 0)
CHANGELOG = TP("state-changelog", 0)


class Journal(list[str]):
    def note(self, what: str) -> None:
        self.append(what)


class Consumer:
    def __init__(self, journal: Journal, assignment: set[TP]) -> None:
        self.journal = journal
        self._assignment = assignment
        self.resumed: set[TP] = set()

    def assignment(self) -> set[TP]:
        return self._assignment

    async def perform_seek(self) -> None:
        self.journal.note("seek starts")
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        self.journal.note("seek done")

    def resume_partitions(self, tps: set[TP]) -> None:
        self.resumed |= tps
        self.journal.note("resume partitions")

    def resume_flow(self) -> None:
        self.journal.note("resume flow")


def world(assignment: set[TP]) -> tuple[Recovery, Consumer, Journal]:
    journal = Journal()
    consumer = Consumer(journal, assignment)

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    async def fetcher_start() -> None:
        journal.note("fetcher")

    app = SimpleNamespace(
        conf=SimpleNamespace(stream_recovery_delay=0.0, broker_request_timeout=5.0),
        consumer=consumer,
        consumer_generation_id=3,
        on_rebalance_complete=SimpleNamespace(send=nothing),
        flow_control=SimpleNamespace(resume=lambda: journal.note("clear queues")),
        _fetcher=SimpleNamespace(maybe_start=fetcher_start),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: journal.note("rebalance end"),
        in_recovery=True,
    )
    tables = SimpleNamespace(
        changelog_topics={CHANGELOG.topic},
        values=lambda: [],
        on_actives_ready=lambda: journal.note("actives ready"),
        on_standbys_ready=lambda: journal.note("standbys ready"),
    )
    recovery = Recovery(app, tables)  # type: ignore[arg-type]
    return recovery, consumer, journal


def test_recovery_seeks_and_clears_before_the_inputs_resume() -> None:
    recovery, consumer, journal = world({EVENTS, DERIVED, CHANGELOG})
    asyncio.run(recovery.on_recovery_completed(generation_id=3))
    assert journal[:5] == [
        "seek starts", "seek done", "clear queues", "resume partitions", "resume flow",
    ]  # fmt: skip
    assert consumer.resumed == {EVENTS, DERIVED}  # never the changelog (standby reading)
    assert recovery.completed.is_set()
    assert journal[-1] == "rebalance end"


def test_a_rebalance_without_changelog_reading_keeps_the_same_order() -> None:
    recovery, consumer, journal = world({EVENTS, CHANGELOG})
    asyncio.run(recovery._resume_streams(generation_id=3))
    assert journal[:5] == [
        "seek starts", "seek done", "clear queues", "resume partitions", "resume flow",
    ]  # fmt: skip
    assert consumer.resumed == {EVENTS}
    assert "standbys ready" in journal


def test_a_newer_rebalance_leaves_the_inputs_paused() -> None:
    recovery, consumer, journal = world({EVENTS, CHANGELOG})
    asyncio.run(recovery.on_recovery_completed(generation_id=2))  # the app is at 3
    assert consumer.resumed == set()
    assert "seek starts" not in journal


def test_the_worker_app_uses_it(tmp_path: Path) -> None:
    settings = replace(Settings.from_env({}), data_dir=tmp_path)
    app = Pipeline(settings).app  # builds Faust's app; connects to nothing
    assert isinstance(app.tables, TableManager)
    assert isinstance(app.tables.recovery, Recovery)
