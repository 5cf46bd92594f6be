"""The fault suite's fixtures: a stack of a scenario's own (so that killing
its broker or freezing its Redis touches no other test), a steady producer,
and the verifier's tables printed at the end of the run.

Sizes: the default run (CI, ``make test``) is a shortened version of each
scenario; ``FAULTS=full`` (``make faults``) runs the full one.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from agents.envvars import Secret
from agents.settings import Settings, StackSettings
from agents.stack.local import Stack
from agents.stack.network import free_port, free_ports
from streams import topics
from streams.partitioning import partition_of
from tests.e2e.conftest import Worker, wait_for
from tests.faults.verifier import Report

FULL = os.environ.get("FAULTS") == "full"

_reports: list[Report] = []


def scale(short: int, full: int) -> int:
    """A scenario's size: ``short`` in the default run, ``full`` with FAULTS=full."""
    return full if FULL else short


@pytest.fixture
def record_report() -> Iterator[list[Report]]:
    """Reports appended here are printed in the run's summary."""
    mine: list[Report] = []
    yield mine
    _reports.extend(mine)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _reports:
        return
    terminalreporter.section("fault suite: the verifier's tables")
    for report in _reports:
        terminalreporter.write_line(report.table())
        terminalreporter.write_line("")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """Kafka and Redis of this test alone, on free ports."""
    defaults = StackSettings.from_env({})
    ports = dict(zip(("kafka_port", "controller_port", "redis_port"), free_ports(3), strict=True))
    stack = Stack(
        StackSettings(
            stack_dir=tmp_path / "stack",
            cache_dir=defaults.cache_dir,
            timeout_s=defaults.timeout_s,
            **ports,
        ),
        progress=lambda message: print(f"own stack: {message}"),
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def own_settings(own_stack: Stack, tmp_path: Path) -> Settings:
    run = uuid.uuid4().hex[:10]
    endpoints = own_stack.endpoints
    return Settings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        redis_url=Secret(endpoints.redis_url),
        topic_prefix=f"f{run}-",
        app_id=f"f{run}",
        store="rocksdb://",
        data_dir=tmp_path / "data",
        web_port=free_port(),
        partitions=4,
        redis_key_prefix=f"f{run}:",
        log_level="info",
        log_format="text",  # the tests read worker logs as text (tests/e2e/test_json_logs.py: JSON)
        session_timeout_s=8,
    )


def committed_everything(settings: Settings, topic: str) -> bool:
    """Has the worker's group committed every record of ``topic``?"""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,  # only reads its committed offsets: never joins
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = consumer.end_offsets(parts)
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()


#: A timer tick and the hand-off of an idle partition's deadlines to the timer
#: (agents/worker/pipeline.py), with room: the wait before settled() looks again.
SETTLE_S = 1.5


def settled(settings: Settings) -> bool:
    """Is the worker done with everything there is? Every input record and
    every internal message (identity merges, referral credits, the Due
    records the timer sends for an idle partition's deadlines) committed —
    and still so after :data:`SETTLE_S`, by when the deadlines that came due
    with the last events have been sent and must be committed too. The
    verifier expects every deadline up to the last event decided."""
    names = [settings.topic(topics.USER_EVENTS), settings.topic(topics.DERIVED)]
    if not all(committed_everything(settings, name) for name in names):
        return False
    time.sleep(SETTLE_S)  # a quiet moment is the condition itself, not an isolation
    return all(committed_everything(settings, name) for name in names)


def finish(
    settings: Settings,
    producer: SteadyProducer,
    worker: Worker,
    what: str = "every record committed",
    *,
    produce_s: float = 300,
) -> None:
    """A scenario's end: the producer has sent everything (within
    ``produce_s``), the ``worker`` then :func:`settled` everything (within
    240 s, else ``what`` names what it did not finish, with its log) and is
    still alive."""
    producer.wait(produce_s)
    wait_for(lambda: settled(settings), 240, worker, what)
    assert worker.proc.poll() is None, worker.tail()


class SteadyProducer:
    """Sends ``keys``/``values`` to the events topic in steps of ``step``
    records every ``pause_s`` (a steady rate), from a thread; rides out a
    broker outage (the client retries; nothing is given up). With
    ``holds``, it stops after each of those record counts until
    :meth:`release` — so that a scenario's next step (a rebalance, say)
    happens while records are still coming, however slow the machine."""

    def __init__(
        self,
        settings: Settings,
        keys: list[bytes],
        values: list[bytes],
        *,
        step: int = 60,
        pause_s: float = 0.2,
        holds: tuple[int, ...] = (),
    ) -> None:
        self.topic = settings.topic(topics.USER_EVENTS)
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            retries=2**31 - 1,
            max_block_ms=600_000,
            delivery_timeout_ms=600_000,
            request_timeout_ms=5_000,
            reconnect_backoff_max_ms=1_000,
        )
        self.keys, self.values, self.step, self.pause_s = keys, values, step, pause_s
        self.sent = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._holds = sorted(holds)
        self._released = threading.Semaphore(0)

    def release(self) -> None:
        """Let the producer go on past its next hold."""
        self._released.release()

    def start(self) -> SteadyProducer:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            holds = [h for h in self._holds if 0 < h < len(self.keys)]
            start = 0
            while start < len(self.keys):
                end = min(start + self.step, len(self.keys), *holds[:1])
                for i in range(start, end):
                    self.producer.send(self.topic, key=self.keys[i], value=self.values[i])
                self.producer.flush()
                self.sent = end
                start = end
                if holds and end == holds[0]:
                    holds.pop(0)
                    self._released.acquire()  # until the scenario's next step is done
                time.sleep(self.pause_s)  # the rate, not a wait for a condition
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout_s: float) -> None:
        assert self.done.wait(timeout_s), f"the producer sent {self.sent} in {timeout_s:.0f} s"
        assert self.error is None, f"the producer failed: {self.error!r}"

    def close(self) -> None:
        self.producer.close(timeout=10)


def probes(settings: Settings, timestamp_ms: int, tag: str) -> tuple[list[bytes], list[bytes]]:
    """One ``session_started`` of a new user on each partition: once a worker
    has applied all of them, it has recovered every partition (Faust
    delivers nothing of a partition before its table is restored)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    wanted = set(range(settings.partitions))
    n = 0
    while wanted:
        user = f"probe-{tag}-{n}"
        n += 1
        number = partition_of(user.encode(), settings.partitions)
        if number not in wanted:
            continue
        wanted.discard(number)
        keys.append(user.encode())
        event = {
            "event_id": f"{user}-e",
            "type": "session_started",
            "user_id": user,
            "timestamp": timestamp_ms,
            "properties": {"session_id": f"{user}-s"},
        }
        values.append(orjson.dumps(event))
    return keys, values
