"""A disk that is full or read-only is named with the data dir and the fix
(agents/errors.py); any other error is not taken for one."""

from __future__ import annotations

import errno
from pathlib import Path

from agents.errors import DataDirError


def test_rocksdb_and_os_errors_of_a_full_or_read_only_disk() -> None:
    data = Path("/var/lib/userpulse")
    full = DataDirError.of(
        Exception("IO error: No space left on device: While appending to file: x/000004.log"),
        data,
    )
    assert full is not None
    assert str(full).startswith(f"the data dir {data} cannot be written (No space left on device)")
    assert "free space on it" in str(full)
    ro = DataDirError.of(OSError(errno.EROFS, "Read-only file system"), data)
    assert ro is not None and "make it writable" in str(ro)


def test_other_errors_are_not_the_disk() -> None:
    assert DataDirError.of(Exception("KafkaTimeoutError: broker down"), "/d") is None
    assert DataDirError.of(OSError(errno.ECONNREFUSED, "Connection refused"), "/d") is None
