"""`userpulse demo` as a new user runs it — twice, the second time after
traffic of its own kind — on a stack of the test's own (its own stack dir
and free ports), then `userpulse stack down`. The second run reads only the
triggers and dead letters that come after it starts, so what earlier runs
left on the topics cannot make it miss its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.commands.demo import WORKER_NAME
from agents.kafka.reader import collect, end_offsets
from agents.settings import Settings
from agents.stack.network import free_ports
from streams import topics

pytestmark = pytest.mark.e2e


def _cli(
    args: list[str], env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.commands.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_the_demo_passes_again_when_run_a_second_time(tmp_path: Path) -> None:
    kafka, controller, redis_port, web = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
    env.update(
        {
            "USERPULSE_STACK_DIR": str(tmp_path / "stack"),
            "USERPULSE_STACK_KAFKA_PORT": str(kafka),
            "USERPULSE_STACK_CONTROLLER_PORT": str(controller),
            "USERPULSE_STACK_REDIS_PORT": str(redis_port),
            "USERPULSE_TOPIC_PREFIX": "demo-test-",
            "USERPULSE_DATA_DIR": str(tmp_path / "data"),
            "USERPULSE_WEB_PORT": str(web),
        }
    )
    try:
        first = _cli(["demo", "--users", "3"], env, 300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "== triggers (" in first.stdout
        second = _cli(["demo", "--users", "3"], env, 300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "a demo worker is already running" in second.stderr + second.stdout
        # the second run showed its own users' triggers only
        shown = [line for line in second.stdout.splitlines() if " stage_changed " in line]
        assert shown and all(" demo-" in line for line in shown)
        # the stack lists the worker it started with Kafka and Redis
        status = _cli(["stack", "status"], env, 60)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
        assert {"kafka", "redis", WORKER_NAME} <= set(rows), status.stdout
        assert " up " in rows[WORKER_NAME], rows[WORKER_NAME]
    finally:
        down = _cli(["stack", "down"], env, 120)
        assert down.returncode == 0, down.stdout + down.stderr


def test_collect_from_end_offsets_reads_only_what_comes_after(settings: Settings) -> None:
    from agents.kafka.admin import ensure_topics
    from agents.kafka.producer import EventProducer

    ensure_topics(settings)
    name = settings.topic(topics.USER_EVENTS)  # no worker here: nothing reads it

    def send(tag: str, n: int) -> None:
        with EventProducer(settings) as producer:
            for i in range(n):
                producer.send_raw(f"{tag}-{i}".encode(), b"x")
            producer.flush()

    send("before", 5)
    since = end_offsets(settings.kafka_bootstrap, [name])
    assert sum(since.values()) == 5
    send("after", 3)
    records = collect(settings.kafka_bootstrap, [name], lambda rs: len(rs) >= 3, start=since)
    assert sorted((r.key or b"").decode() for r in records) == ["after-0", "after-1", "after-2"]
