"""One line per outage (agents/worker/logfilter.py): the libraries' repeated
warnings are held back and counted; everything else passes."""

from __future__ import annotations

import logging

from agents.worker.logfilter import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_are_held_back_then_counted_once_per_window() -> None:
    clock = Clock()
    limit = RepeatFilter(window_s=60, clock=clock)
    first = record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, "refused")
    assert limit.filter(first)
    passed = []
    for i in range(10_000):  # an outage: the same line for every retry, any node
        clock.now = i * 0.005
        passed.append(limit.filter(record("aiokafka.conn", first.msg, i % 3, "refused")))
    assert not any(passed)
    assert limit.held_back == 10_000
    clock.now = 61.0
    after = record("aiokafka.conn", first.msg, 2, "refused")
    assert limit.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 2: refused (10,000 more like this in the last 60 s)"
    )
    clock.now = 62.0
    assert not limit.filter(record("aiokafka.conn", first.msg, 1, "refused"))


def test_other_kinds_levels_and_loggers_pass() -> None:
    limit = RepeatFilter(window_s=60, clock=Clock())
    assert limit.filter(record("faust.transport", "Heartbeat failed"))
    assert limit.filter(record("faust.transport", "Commit failed"))  # another kind
    assert limit.filter(record("aiokafka", "Heartbeat failed"))  # another logger
    for _ in range(3):
        assert limit.filter(record("agents.redis.projection", "Redis is down"))  # ours
        assert limit.filter(record("aiokafka", "fetching", level=logging.INFO))  # below WARNING
    assert not limit.filter(record("faust.transport", "Heartbeat failed"))
