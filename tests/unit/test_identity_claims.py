"""An identity claim cannot take over a known user (issue #15): a
``user_identified`` naming another signed-up user's id as its
``anonymous_id`` neither copies that user's history into the claimant nor
points that user's later events to it; and an anonymous id keeps the first
user it was merged into."""

from __future__ import annotations

from streams.derived import Alias, Merge
from streams.identity import on_alias
from streams.state import new_state
from tests.unit.test_erasure import T0, H, World, event


def test_a_claim_on_a_signed_up_user_is_refused() -> None:
    world = World()
    world.run(
        [
            event(1, "signed_up", T0, "bob"),
            event(2, "page_viewed", T0 + 1, "bob"),
            event(3, "signed_up", T0 + 2, "eve"),
        ]
    )
    bob = world.states[b"bob"]
    world.run([event(4, "user_identified", T0 + H, "eve", "bob")])
    assert world.states[b"bob"] == bob, "the claimed user's state must not change"
    eve = world.states[b"eve"]
    assert eve.event_count == 2 and eve.merged_from == ()  # bob's history not copied
    assert not [m for b in world.batches for m in b.derived if isinstance(m, Merge)]
    # bob's own events stay bob's, not forwarded to eve
    world.run([event(5, "page_viewed", T0 + 2 * H, "bob")])
    assert world.states[b"bob"].event_count == 3 and world.states[b"eve"].event_count == 2


def test_an_identified_user_cannot_be_claimed_either() -> None:
    world = World()
    world.run(
        [
            event(1, "page_viewed", T0, None, "anon-1"),
            event(2, "user_identified", T0 + 1, "bob", "anon-1"),
        ]
    )
    assert world.states[b"bob"].merged_from == ("anon-1",)
    bob = world.states[b"bob"]
    world.run([event(3, "user_identified", T0 + H, "eve", "bob")])
    assert world.states[b"bob"] == bob


def test_an_anonymous_id_keeps_the_first_user_it_was_merged_into() -> None:
    world = World()
    world.run(
        [
            event(1, "page_viewed", T0, None, "anon-1"),
            event(2, "user_identified", T0 + 1, "bob", "anon-1"),
        ]
    )
    assert world.states[b"bob"].event_count == 2
    world.run([event(3, "user_identified", T0 + H, "eve", "anon-1")])
    assert world.states[b"anon-1"].merged_into == "bob"
    assert world.states[b"eve"].event_count == 1  # anon-1's history stays bob's alone
    world.run([event(4, "page_viewed", T0 + 2 * H, None, "anon-1")])
    assert world.states[b"bob"].event_count == 3  # forwarded to the first


def test_the_first_claim_redelivered_gets_the_same_answer() -> None:
    anonymous = new_state("anon-1", T0)
    marked, merge = on_alias(anonymous, Alias("bob", "anon-1", T0 + 1))
    again, merge_again = on_alias(marked, Alias("bob", "anon-1", T0 + 1))
    assert again == marked and merge_again == merge and merge is not None
