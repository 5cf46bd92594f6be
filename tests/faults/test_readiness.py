"""The worker's health endpoints on a stack of the test's own
(docs/operations.md): not ready while it starts and recovers, ready once it
has partitions with tables recovered, not ready — saying why — while the
broker or Redis is frozen longer than ``USERPULSE_UNREACHABLE_S``, ready
again once it answers, alive throughout; and a second worker on the same
port stops with one line and the fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from agents.stack.local import Stack
from tests.e2e.conftest import Worker, wait_for

pytestmark = pytest.mark.e2e

UNREACHABLE_S = 3


def health(settings: Settings, path: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of ``GET path``; (0, {}) while nothing answers."""
    url = f"http://127.0.0.1:{settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def _until(
    settings: Settings, worker: Worker, want: Callable[[int, dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        status, body = health(settings, "/health/ready")
        seen[:] = [body]
        return want(status, body)

    wait_for(check, 90, worker, what)
    return seen[0]


def _frozen(pid: int, group: bool) -> Callable[[int], None]:
    def send(sig: int) -> None:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)

    return send


def test_ready_only_when_working_and_not_while_a_dependency_is_frozen(
    own_stack: Stack, own_settings: Settings, tmp_path: Path
) -> None:
    settings = replace(own_settings, unreachable_s=UNREACHABLE_S)
    ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        # from the first answer on: not ready until it has recovered its partitions
        first: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + 90
        while not first and time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.tail()
            status, body = health(settings, "/health/ready")
            if status:
                first.append((status, body))
            else:
                time.sleep(0.02)
        assert first, worker.tail()
        status, body = first[0]
        assert status == 503 and not body["ready"], body
        assert body["reasons"][0].startswith("starting"), body
        assert health(settings, "/health/live") == (200, {"live": True})

        ready = _until(settings, worker, lambda s, _b: s == 200, "ready")
        assert ready == {"ready": True, "reasons": [], "silent_s": {"Kafka": 0.0, "Redis": 0.0}}

        for name, group in (("kafka", True), ("redis", False)):
            pid = own_stack.live_pid(name)
            assert pid is not None
            signal_it = _frozen(pid, group)
            signal_it(signal.SIGSTOP)
            try:
                body = _until(
                    settings,
                    worker,
                    lambda s, _b: s == 503,
                    f"not ready while {name} is frozen",
                )
                service = "Kafka" if name == "kafka" else "Redis"
                assert any(r.startswith(f"{service} has not answered for") for r in body["reasons"])
                assert body["silent_s"][service] > UNREACHABLE_S, body
                assert health(settings, "/health/live")[0] == 200  # alive: do not restart it
            finally:
                signal_it(signal.SIGCONT)
            _until(settings, worker, lambda s, _b: s == 200, f"ready again after {name}")

        # a second worker on the same host and port: one line with the fix, exit 2
        env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
        env.update(settings.to_env())
        second = subprocess.run(
            [sys.executable, "-m", "agents.commands.cli", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"port {settings.web_port}" in lines[0] and "--web-port" in lines[0], lines[0]
        assert worker.proc.poll() is None, worker.tail()  # the first one is untouched
    finally:
        assert worker.stop() == 0, worker.tail()
