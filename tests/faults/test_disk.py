"""The worker's data dir fills up under a steady producer, or is read-only
at a start: the worker stops with one clear line naming the data dir and
the fix (exit 2), commits nothing it could not store, and once the disk is
writable again a restart on the same disk loses nothing and applies nothing
twice (the verifier, local RocksDB included).

The data dir is a small tmpfs of the test's own (``mount`` needs root, as
the project's CI and development machines have; elsewhere the scenario
fails saying so rather than passing unrun).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agents.kafka.admin import ensure_topics
from agents.settings import Settings
from benchmarks.generator import generate
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, finish, scale
from tests.faults.verifier import Report, verify

pytestmark = pytest.mark.e2e

NOW_MS = 1_767_225_600_000
EVENTS = scale(3_000, 20_000)
USERS = scale(150, 1_500)
TMPFS_MB = 64


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`TMPFS_MB` MB, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, (
        f"this scenario mounts a tmpfs as the data dir and needs root: {made.stderr.strip()}"
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until ``disk`` has no space left."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError:
            pass
    return ballast


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def _scenario(
    settings: Settings,
    tmp_path: Path,
    disk: Path,
    break_disk: Callable[[], None],
    mend_disk: Callable[[], None],
    what: str,
    expected_line: str,
) -> Report:
    settings = replace(settings, clock="stream", data_dir=disk / "data")
    log, worker, producer = _started(settings, tmp_path, seed=23)
    try:
        break_disk()
        code = worker.proc.wait(120)
        worker.stop()
        text = log.read_text(errors="replace")
        assert code == 2, worker.tail()
        fatal = [line for line in text.splitlines() if expected_line in line]
        assert fatal, worker.tail()
        assert str(settings.data_dir) in fatal[-1], fatal[-1]
        assert "Traceback" not in text, worker.tail(80)
        mend_disk()
        worker = Worker(settings, log)  # the same disk, writable again
        finish(settings, producer, worker, "every record committed after the restart")
    finally:
        producer.close()
        assert worker.stop() == 0, worker.tail()
    report = verify(settings, what, data_dir=settings.data_dir)
    assert not report.failures(), report.failures()
    return report


def _started(
    settings: Settings, tmp_path: Path, *, seed: int
) -> tuple[Path, Worker, SteadyProducer]:
    """A worker applying a steady producer's events: (its log, it, the producer)."""
    data = generate(EVENTS, USERS, seed=seed, partitions=settings.partitions, now_ms=NOW_MS)
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    worker = Worker(settings, log)
    producer = SteadyProducer(settings, data.keys, data.values).start()
    try:
        wait_for(lambda: counters(settings).get("events", 0) > 0, 90, worker, "first events")
    except BaseException:
        producer.close()
        worker.stop()
        raise
    return log, worker, producer


def test_the_data_dir_fills_up(
    settings: Settings, tmp_path: Path, small_disk: Path, record_report: list[Report]
) -> None:
    ballast: list[Path] = []
    report = _scenario(
        settings,
        tmp_path,
        small_disk,
        lambda: ballast.append(fill(small_disk)),
        lambda: os.unlink(ballast[0]),
        f"data dir full ({TMPFS_MB} MB tmpfs), then freed and the worker restarted",
        "No space left on device",
    )
    record_report.append(report)


def test_a_read_only_data_dir(
    settings: Settings, tmp_path: Path, small_disk: Path, record_report: list[Report]
) -> None:
    """A volume mounted read-only (a filesystem with open files cannot be
    switched to read-only under the worker): the worker stops, the disk turns
    read-only, a start is refused with one line, then it is writable again."""
    settings = replace(settings, clock="stream", data_dir=small_disk / "data")
    log, worker, producer = _started(settings, tmp_path, seed=29)
    try:
        assert worker.stop() == 0, worker.tail()
        remount(small_disk, "ro")
        refused = Worker(settings, tmp_path / "refused.log")
        code = refused.proc.wait(120)
        refused.stop()
        text = (tmp_path / "refused.log").read_text(errors="replace")
        assert code == 2, text
        assert "Read-only file system" in text and str(settings.data_dir) in text, text
        assert "Traceback" not in text, text
        remount(small_disk, "rw")
        worker = Worker(settings, log)
        finish(settings, producer, worker, "every record committed after the restart")
    finally:
        producer.close()
        assert worker.stop() == 0, worker.tail()
    report = verify(
        settings, "data dir read-only at a start, then writable again", data_dir=settings.data_dir
    )
    record_report.append(report)
    assert not report.failures(), report.failures()
