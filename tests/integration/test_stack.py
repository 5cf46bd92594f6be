"""The local stack, for real: up, idempotent up, status, down leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.settings import StackSettings
from agents.stack.local import Stack
from agents.stack.network import free_ports, kafka_answers, port_free, redis_answers
from tests.conftest import Endpoints

pytestmark = pytest.mark.integration


def test_the_session_stack_answers(stack_endpoints: Endpoints) -> None:
    assert kafka_answers(stack_endpoints.kafka_bootstrap)
    assert redis_answers(stack_endpoints.redis_url)


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    ports = dict(zip(("kafka_port", "controller_port", "redis_port"), free_ports(3), strict=True))
    messages: list[str] = []
    stack = Stack(
        StackSettings(stack_dir=tmp_path, cache_dir=StackSettings.from_env({}).cache_dir, **ports),
        progress=messages.append,
    )
    try:
        endpoints = stack.up()
        assert endpoints.kafka_bootstrap == f"127.0.0.1:{ports['kafka_port']}"
        status = {s.name: s for s in stack.status()}
        assert status["kafka"].answering and status["redis"].answering
        pids = {name: s.pid for name, s in status.items()}

        messages.clear()
        stack.up()
        assert any("already running" in m for m in messages)
        assert {s.name: s.pid for s in stack.status()} == pids
        exports = endpoints.exports()
        assert f"export USERPULSE_KAFKA_BOOTSTRAP=127.0.0.1:{ports['kafka_port']}" in exports
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["kafka", "redis"]
    for pid in pids.values():
        assert pid is not None
        assert not _exists(pid), f"pid {pid} survived `down`: {_describe(pid)}"
    assert all(port_free(p) for p in ports.values())
    assert not any(s.running for s in stack.status())


def test_a_failed_up_leaves_nothing_it_started_running(tmp_path: Path) -> None:
    import socket

    from agents.errors import StackError

    ports = dict(zip(("kafka_port", "controller_port", "redis_port"), free_ports(3), strict=True))
    stack = Stack(
        StackSettings(stack_dir=tmp_path, cache_dir=StackSettings.from_env({}).cache_dir, **ports),
        progress=lambda _message: None,
    )
    with socket.socket() as taken:  # Kafka's port held by another process
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", ports["kafka_port"]))
        taken.listen()
        try:
            with pytest.raises(StackError, match="USERPULSE_STACK_KAFKA_PORT"):
                stack.up()
            # the Redis this attempt started was stopped with the failure
            assert not any(s.running for s in stack.status())
            assert port_free(ports["redis_port"])
        finally:
            stack.down()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()[:80]
    except OSError as exc:
        return str(exc)
