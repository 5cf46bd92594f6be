"""Erasure as docs/state.md says (issue #15): what stays of an erased user is
a marker without the user's id or facts; the anonymous histories merged into
the user are erased with it; a user who comes back starts a new history whose
trigger ids are new (a consumer de-duplicating by id must not drop them)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from streams.batch import Batch, Input, Record
from streams.codec import _SCALARS, decode_state, encode_state
from streams.derived import DerivedMessage, Erase, decode_derived, encode_derived
from streams.engine import Engine
from streams.partition import Partition
from streams.userstate import STAGE_ERASED, UserState

T0 = 1_700_000_000_000
NOW = T0 + 10**10
H = 3_600_000


def event(n: int, etype: str, ts: int, user: str | None, anon: str | None = None) -> Record:
    doc = {"event_id": f"e-{n}", "type": etype, "timestamp": ts}
    if user is not None:
        doc["user_id"] = user
    if anon is not None:
        doc["anonymous_id"] = anon
    key = (user or anon or "").encode()
    return Record(key, orjson.dumps(doc), n)


class World:
    """Every key's state in one dict; internal messages delivered until none is left."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.partition = Partition(0)
        self.states: dict[bytes, UserState] = {}
        self.batches: list[Batch] = []

    def run(self, inputs: Sequence[Input]) -> None:
        pending: list[Input] = list(inputs)
        while pending:
            out = self.engine.run(self.partition, pending, self.states.get, now_ms=NOW)
            self.batches.append(out)
            self.states.update(out.writes)
            pending = [decode_derived(encode_derived(m)) for m in out.derived]

    def triggers(self, kind: str) -> list[str]:
        return [t.trigger_id for b in self.batches for t in b.triggers if t.type == kind]

    def derived(self) -> list[DerivedMessage]:
        return [m for b in self.batches for m in b.derived]


def test_the_marker_of_an_erased_user_carries_no_id_and_no_facts() -> None:
    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    marker = world.states[b"ana"]
    assert marker.stage == STAGE_ERASED
    assert marker.user_id == ""  # the key is the only place the id stays
    assert b"ana" not in encode_state(marker)
    assert marker == UserState(
        user_id="",
        first_seen_ms=T0 + H,
        last_seen_ms=T0 + H,
        stage=STAGE_ERASED,
        revision=marker.revision,
        events_offset=2,
        derived_offset=marker.derived_offset,
        erasures=1,
    )
    assert decode_state(encode_state(marker)) == marker


def test_the_anonymous_histories_merged_into_an_erased_user_are_erased_too() -> None:
    world = World()
    world.run(
        [
            event(1, "page_viewed", T0, None, "anon-1"),
            event(2, "page_viewed", T0 + 1, None, "anon-2"),
            event(3, "user_identified", T0 + H, "ana", "anon-1"),
            event(4, "signed_up", T0 + H + 1, "ana", "anon-2"),
        ]
    )
    assert world.states[b"ana"].merged_from == ("anon-1", "anon-2")
    assert world.states[b"anon-1"].merged_into == "ana"
    world.run([event(5, "user_deleted", T0 + 2 * H, "ana")])
    assert {m.anonymous_id for m in world.derived() if isinstance(m, Erase)} == {
        "anon-1",
        "anon-2",
    }
    for key in (b"ana", b"anon-1", b"anon-2"):
        state = world.states[key]
        assert state.stage == STAGE_ERASED, key
        assert state.event_count == 0 and state.merged_into is None and state.merged_from == ()
        assert b"ana" not in encode_state(state)


def test_an_erase_reaches_only_an_anonymous_id_merged_into_the_erased_user() -> None:
    world = World()
    world.run([event(1, "page_viewed", T0, None, "anon-1")])
    before = world.states[b"anon-1"]
    world.run([Erase("somebody", "anon-1", T0 + H)])  # not merged into somebody
    assert world.states[b"anon-1"] == before


def test_a_returning_user_gets_new_trigger_ids() -> None:
    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    [before] = world.triggers("stage_changed")
    world.run([event(3, "signed_up", T0 + 2 * H, "ana")])
    first, second = world.triggers("stage_changed")
    assert first == before
    assert second != before, "a consumer de-duplicating by id would drop the new history's"
    assert world.states[b"ana"].user_id == "ana" and world.states[b"ana"].event_count == 1

    again = World()  # deterministic: a replay gives the same new id
    again.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    again.run([event(3, "signed_up", T0 + 2 * H, "ana")])
    assert again.triggers("stage_changed") == [first, second]


def test_a_user_never_erased_keeps_the_trigger_ids_it_always_had() -> None:
    from streams.triggers import trigger_id_for

    world = World()
    world.run([event(1, "signed_up", T0, "ana")])
    assert world.triggers("stage_changed") == [trigger_id_for("stage_changed", "ana", "acquired")]


def test_two_erasures_at_the_same_time_still_give_the_returning_user_new_ids() -> None:
    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    world.run([event(3, "signed_up", T0 + H, "ana"), event(4, "user_deleted", T0 + H, "ana")])
    world.run([event(5, "signed_up", T0 + H, "ana")])
    ids = world.triggers("stage_changed")
    assert len(ids) == 3
    assert len(set(ids)) == 3, "the third history's stage_changed must not repeat the second's"
    assert world.states[b"ana"].erased_ms == T0 + H and world.states[b"ana"].erasures == 2


def test_the_marker_counts_erasures_of_histories_not_of_markers() -> None:
    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    assert world.states[b"ana"].erasures == 1
    world.run([event(3, "user_deleted", T0 + 2 * H, "ana")])  # erased again, nothing in between
    assert world.states[b"ana"].erasures == 1
    world.run([event(4, "page_viewed", T0 + 3 * H, "ana")])
    assert world.states[b"ana"].erasures == 1
    world.run([event(5, "user_deleted", T0 + 4 * H, "ana")])
    assert world.states[b"ana"].erasures == 2


def _older_layout(state: UserState, version: int, dropped: Sequence[str]) -> UserState:
    doc = orjson.loads(encode_state(state))
    for name in sorted(dropped, key=_SCALARS.index, reverse=True):
        at = 1 + _SCALARS.index(name)
        doc = [*doc[:at], *doc[at + 1 :]]
    return decode_state(orjson.dumps([version, *doc[1:]]))


def test_a_state_of_layout_4_is_read_as_a_history_never_erased() -> None:
    world = World()
    world.run([event(1, "signed_up", T0, "ana")])
    old = _older_layout(world.states[b"ana"], 4, ["erased_ms", "erasures"])
    assert old.erased_ms == 0 and old.erasures == 0
    assert old == world.states[b"ana"]


def test_a_state_of_layout_5_after_one_erasure_keeps_its_trigger_ids() -> None:
    from streams.triggers import state_trigger_id, trigger_id_for

    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    marker = _older_layout(world.states[b"ana"], 5, ["erasures"])
    assert marker == world.states[b"ana"] and marker.erasures == 1
    world.run([event(3, "signed_up", T0 + 2 * H, "ana")])
    back = world.states[b"ana"]
    old = _older_layout(back, 5, ["erasures"])
    assert old == back and old.erasures == 1
    # the id a history begun after one erasure had before erasures were counted
    want = trigger_id_for("stage_changed", "ana", "x", f"after:{T0 + H}")
    assert state_trigger_id("stage_changed", old, "x") == want
    assert state_trigger_id("stage_changed", back, "x") == want
    fresh = _older_layout(
        UserState(user_id="bo", first_seen_ms=T0, last_seen_ms=T0), 5, ["erasures"]
    )
    assert fresh.erasures == 0
