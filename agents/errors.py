"""Adapter errors; the tree is drawn in :mod:`streams.errors`."""

from __future__ import annotations

from streams.errors import ConfigError, UserpulseError

__all__ = [
    "ConfigError",
    "DataDirError",
    "InfrastructureError",
    "StackError",
    "UserpulseError",
]


class StackError(UserpulseError):
    """The local Kafka/Redis stack cannot start or does not answer.

    The message says the cause and the fix; ``log_tail`` carries the last
    lines of the server log when there is one.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class InfrastructureError(UserpulseError):
    """Kafka or Redis cannot be reached at run time. Retried, never dead-lettered."""


#: What the operating system (or RocksDB, quoting it) says when a disk is full
#: or read-only, and the fix for each.
_DISK_TROUBLE = {
    "No space left on device": "free space on it",
    "Read-only file system": "make it writable",
    "Disk quota exceeded": "raise the quota or free space",
}


class DataDirError(UserpulseError):
    """The worker's data dir cannot be written (full, read-only): fatal, and
    nothing is lost — the batch that could not be stored is not committed."""

    @classmethod
    def of(cls, error: BaseException, data_dir: object) -> DataDirError | None:
        """The clear error for ``error`` when it is the disk's (None otherwise)."""
        text = str(error)
        for cause, fix in _DISK_TROUBLE.items():
            if cause in text:
                return cls(
                    f"the data dir {data_dir} cannot be written ({cause}): {fix} and start "
                    "the worker again; nothing is lost (what was not stored is not "
                    "committed, and is read again)"
                )
        return None
