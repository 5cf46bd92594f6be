"""Which states have a Redis profile (docs/redis.md): every user's — one
known only as a referrer included — but not an erasure marker's nor the bare
marker of an anonymous id merged before it had any history."""

from __future__ import annotations

from streams.derived import Alias, ReferralCredit
from streams.identity import on_alias
from streams.policy import DEFAULT_POLICY
from streams.profile import mirrored
from streams.referral import on_referral_credit
from tests.unit.test_erasure import T0, H, World, event


def test_a_user_known_only_as_a_referrer_is_mirrored() -> None:
    credited = on_referral_credit(None, ReferralCredit("ref-1", "bo", T0, "e-1"), DEFAULT_POLICY)
    assert credited.event_count == 0 and credited.referral_count == 1
    assert mirrored(credited)


def test_a_live_user_and_a_merged_anonymous_history_are_mirrored() -> None:
    world = World()
    world.run([event(1, "page_viewed", T0, None, "anon-1"), event(2, "signed_up", T0, "ana")])
    assert mirrored(world.states[b"ana"]) and mirrored(world.states[b"anon-1"])
    world.run([event(3, "user_identified", T0 + H, "ana", "anon-1")])
    assert world.states[b"anon-1"].merged_into == "ana"
    assert mirrored(world.states[b"anon-1"])  # a lookup by the anonymous id finds the user


def test_markers_are_not_mirrored() -> None:
    bare, _merge = on_alias(None, Alias("ana", "anon-2", T0))
    assert bare is not None and not mirrored(bare)
    world = World()
    world.run([event(1, "signed_up", T0, "ana"), event(2, "user_deleted", T0 + H, "ana")])
    assert not mirrored(world.states[b"ana"])
