"""Referral credit across partitions.

A ``signed_up`` with a ``referrer_id`` happens on the new user's partition,
but the credit belongs to the referrer — another key, usually another
partition. The new user's partition sends a
:class:`~streams.derived.ReferralCredit` keyed by the referrer; the
referrer's partition counts it once per referred user. A ``referral_converted``
event keyed by the referrer is counted directly by :func:`streams.state.apply`.
"""

from __future__ import annotations

from dataclasses import replace

from streams.derived import ReferralCredit
from streams.events import Event
from streams.policy import Policy
from streams.state import credit_referral, derive, new_state
from streams.userstate import UserState


def credits_to_send(
    old: UserState | None, new: UserState | None, event: Event
) -> list[ReferralCredit]:
    """A credit for the referrer when ``event`` is the sign-up that named one."""
    if new is None or new.referrer_id is None or event.type != "signed_up":
        return []
    if old is not None and old.referrer_id is not None:
        return []  # credited on an earlier sign-up event already
    return [ReferralCredit(new.referrer_id, new.user_id, event.timestamp_ms, event.event_id)]


def on_referral_credit(
    state: UserState | None, credit: ReferralCredit, policy: Policy
) -> UserState:
    """The referrer's state with the credit counted (once per referred user).

    A referrer never seen before gets a state with no events of its own."""
    base = state if state is not None else new_state(credit.referrer_id, credit.at_ms)
    changes = credit_referral(base, credit.referred_user_id)
    if not changes:
        return base
    return derive(replace(base, **changes), max(base.last_seen_ms, base.evaluated_ms), policy)
