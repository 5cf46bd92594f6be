"""Adapter errors; the tree is drawn in :mod:`streams.errors`."""

from __future__ import annotations

from streams.errors import ConfigError, UserpulseError

__all__ = ["ConfigError", "InfrastructureError", "StackError", "UserpulseError"]


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
