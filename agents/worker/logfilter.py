"""One line per outage instead of thousands.

While the broker is down, aiokafka and Faust log the same warning or error
for every connection attempt, fetch and heartbeat: a broker outage of ~55 s
wrote 130,000 ERROR lines (13.5 MB) in a minute (issue #15). The filter lets
the first record of each kind through — a kind is the logger and the
message's format string, so "Unable connect to node 1" and the same line for
node 2 are one kind — and holds back its repeats for :data:`WINDOW_S`; the
first repeat after that is written with how many were held back since:

    ... [ERROR] Unable connect to node with id 1: ... (1,204 more like this in the last 60 s)

Only the libraries' records (aiokafka, faust, kafka, mode) are limited;
userpulse's own lines are already one per event of note (the projection
logs "Redis is down" once per outage, the environment checks once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: How long the repeats of one kind of record are held back.
WINDOW_S = 60.0
#: The loggers whose records are limited (and their children).
LIMITED = ("aiokafka", "faust", "kafka", "mode")
#: Kinds remembered at most (the oldest are forgotten first).
MAX_KINDS = 1024


class RepeatFilter(logging.Filter):
    """Passes the first record of a kind, then one per window with a count."""

    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        #: kind → (when its last record was let through, repeats held back since)
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}
        #: records held back since start (all kinds)
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(LIMITED):
            return True
        kind = (record.name, str(record.msg))
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window_s:
            self._kinds[kind] = (seen[0], seen[1] + 1)
            self.held_back += 1
            return False
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.msg} ({seen[1]:,} more like this in the last {self.window_s:.0f} s)"
            )
        self._kinds.pop(kind, None)
        self._kinds[kind] = (now, 0)
        if len(self._kinds) > MAX_KINDS:
            del self._kinds[next(iter(self._kinds))]
        return True


def install(logger: logging.Logger) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of ``logger`` (the root)."""
    limit = RepeatFilter()
    for handler in logger.handlers:
        handler.addFilter(limit)
    return limit
