"""End-to-end fixtures: `userpulse worker` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings


class Worker:
    """A `userpulse worker` subprocess with its log."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
        env.update(settings.to_env())
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.commands.cli", "worker"],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    ensure_topics(settings)
    w = Worker(settings, tmp_path / "worker.log")
    try:
        yield w
    finally:
        w.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, worker: Worker, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with the worker's log if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass  # e.g. the worker's web port is not open yet

        assert worker.proc.poll() is None, (
            f"worker exited while waiting for {what}:\n{worker.tail()}"
        )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.tail()}")


def counters(settings: Settings) -> dict[str, Any]:
    """The worker's own counters from its web endpoint."""
    url = f"http://127.0.0.1:{settings.web_port}/counters/"
    with urllib.request.urlopen(url, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result
