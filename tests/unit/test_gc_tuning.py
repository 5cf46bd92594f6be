"""The collector tuning the worker and the back-test apply after start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agents import gc_tuning


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_tune_freezes_what_is_alive_and_keeps_collecting_cycles(unfrozen: None) -> None:
    assert gc.get_freeze_count() == 0
    gc_tuning.tune()
    assert gc.get_freeze_count() > 1000  # at least the modules pytest imported
    assert gc.isenabled()

    class Cycle:
        other: object

    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # a cycle made after tuning is still collected
