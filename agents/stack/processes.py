"""The processes the local stack started: whether one is alive and still
ours (pid files can outlive their process, and pids are reused), and the
tail of a log."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` has not fully exited (a zombie whose threads still run is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path(f"/proc/{pid}/stat").exists():
        return True  # no /proc: trust kill(0)
    if not _zombie(pid):
        return True
    # A zombie leader may still have threads finishing (a JVM's shutdown
    # hooks run after its main thread ended): alive until fully exited.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped != pid
    except ChildProcessError:  # not our child: its parent reaps it
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        threads = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
        return threads is not None and int(threads.group(1)) > 1


def is_ours(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and is the process a pid file recorded: its
    command line still carries ``marker``."""
    if not alive(pid):
        return False
    for _ in range(50):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return True  # no /proc (macOS): trust the pid file
        if cmdline.strip():
            return marker in cmdline
        if _zombie(pid):
            return True  # a JVM whose main thread ended: no command line, threads still running
        # empty for an instant: redis-server rewriting its title in place, or a
        # process between fork and exec (that one is someone else's) — look again
        time.sleep(0.01)
    return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of the log at ``path`` (empty when unreadable)."""
    try:
        return tail_text(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


def tail_text(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
