"""The userpulse exception tree — one root, every name ends in ``Error``.

::

    UserpulseError                  root: catch this to catch everything of ours
    ├── EventError                  one input record is invalid (→ dead-letter topic)
    ├── StateError                  a stored state blob cannot be decoded
    └── ConfigError                 a setting or policy value is wrong (names the key and the fix)
        (agents/ adds)
        ├── StackError              the local Kafka/Redis stack cannot start or answer
        └── InfrastructureError     Kafka or Redis unreachable at run time
                                    (retried, never dead-lettered)
"""

from __future__ import annotations


class UserpulseError(Exception):
    """Root of every error raised by userpulse itself."""


class EventError(UserpulseError):
    """An input record that cannot become an event.

    ``code`` is a stable machine-readable class (``not_json``, ``missing_field``
    …), ``path`` the JSON path of the offending field (``$`` for the whole
    record), ``message`` a sentence a producer can act on.
    """

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(f"{code} at {path}: {message}")
        self.code = code
        self.path = path
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


class StateError(UserpulseError):
    """A stored user-state blob that cannot be decoded."""


class ConfigError(UserpulseError):
    """A setting or policy value that is missing or wrong.

    The message names the key, what is wrong, and how to fix it.
    """

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key}: {problem}. Fix: {fix}")
        self.key = key
        self.problem = problem
        self.fix = fix
