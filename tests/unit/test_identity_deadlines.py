"""A merge decides the anonymous id's overdue deadlines first (issue #15):
the ``Alias`` a link sends is handled like an event — the anonymous id's
deadlines due before the link are decided at their own time, then it is
marked merged — so the merged id's state, its snapshot and the triggers do
not depend on whether an idle timer ran on its partition before the Alias
arrived."""

from __future__ import annotations

from dataclasses import replace

from streams.batch import Trigger
from streams.policy import DAY_MS
from streams.userstate import UserState
from tests.unit.test_erasure import T0, World, event

LINK_MS = T0 + 40 * DAY_MS


def _visitor(world: World) -> None:
    world.run(
        [
            event(1, "page_viewed", T0, None, "anon-1"),
            event(2, "page_viewed", T0 + 1, None, "anon-1"),
            event(3, "signed_up", T0 + 2, "ana"),
        ]
    )


def _link(world: World) -> None:
    world.run([event(4, "user_identified", LINK_MS, "ana", "anon-1")])


def _timer(world: World, until_ms: int) -> None:
    out = world.engine.run(
        world.partition, [], world.states.get, now_ms=until_ms, until_ms=until_ms
    )
    world.batches.append(out)
    world.states.update(out.writes)


def _triggers(world: World) -> list[tuple[str, str, int]]:
    found: list[Trigger] = [t for b in world.batches for t in b.triggers]
    return sorted((t.trigger_id, t.type, t.occurred_at_ms) for t in found)


def _anonymous(world: World) -> UserState:
    return world.states[b"anon-1"]


def _facts(state: UserState) -> UserState:
    """``state`` without its revision: an idle timer's decision is a stored
    change of its own (the worker and the back-test differ in it too)."""
    return replace(state, revision=0)


def test_the_merge_does_not_depend_on_an_idle_timer_running_before_it() -> None:
    direct = World()
    _visitor(direct)
    _link(direct)

    timed = World()
    _visitor(timed)
    before = _anonymous(timed)
    _timer(timed, LINK_MS - 1)  # the anonymous partition's timer ran before the Alias came
    assert _anonymous(timed) != before, "the timer must have decided something (else no test)"
    _link(timed)

    assert _facts(_anonymous(direct)) == _facts(_anonymous(timed))
    assert _facts(direct.states[b"ana"]) == _facts(timed.states[b"ana"])
    assert _triggers(direct) == _triggers(timed)


def test_the_deadlines_after_the_link_are_not_decided_for_the_merged_id() -> None:
    world = World()
    _visitor(world)
    _link(world)
    merged = _anonymous(world)
    assert merged.merged_into == "ana"
    assert merged.evaluated_ms < LINK_MS
    _timer(world, LINK_MS + 400 * DAY_MS)
    assert _anonymous(world) == merged  # a merged id has no deadlines of its own
