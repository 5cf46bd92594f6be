"""Identity: an anonymous visitor's history joins the user's once they are
known (``user_identified``, or a ``signed_up`` that carries both ids).

State is keyed by user id — or by anonymous id before sign-up — so the two
histories live on different partitions. The merge is three derived messages
(:mod:`streams.derived`):

1. the user's partition sees an event with both ids and sends
   :class:`~streams.derived.Alias` (keyed by the anonymous id);
2. the anonymous id's partition marks its state ``merged_into`` the user and
   answers :class:`~streams.derived.Merge` with a snapshot of that state;
   any later event of the anonymous id is sent on as
   :class:`~streams.derived.Forward`;
3. the user's partition folds the snapshot in (:func:`merge_states`) and
   applies forwarded events as its own.

Every step is idempotent: a redelivered Alias re-sends the same snapshot and
a Merge already in ``merged_from`` changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from streams.derived import Alias, Erase, Forward, Merge
from streams.events import Event
from streams.policy import Policy
from streams.state import derive, erased_marker
from streams.userstate import ACTIVITY_DAYS, DEDUP_WINDOW, STAGE_ERASED, STAGE_MERGED, UserState


def aliases_to_send(state: UserState | None, event: Event) -> list[Alias]:
    """An Alias when ``event`` links an anonymous id not merged yet."""
    anonymous_id = event.anonymous_id
    if event.user_id is None or anonymous_id is None or anonymous_id == event.user_id:
        return []
    if state is not None and anonymous_id in state.merged_from:
        return []
    return [Alias(event.user_id, anonymous_id, event.timestamp_ms)]


def on_alias(anonymous: UserState | None, alias: Alias) -> tuple[UserState | None, Merge | None]:
    """The anonymous side: mark the state merged and answer with its snapshot.

    With no anonymous history yet, a bare marker state remembers the merge so
    that the id's later events are forwarded too; it is stamped with the time
    of the event that linked the ids (never a clock: a replay gives the same).

    A claim is refused — the state unchanged, no answer — when the id is a
    known user (:func:`is_known`) or is merged into another user already
    (the first claim is kept): no claim takes over someone else's history."""
    if anonymous is None:
        marker = UserState(
            user_id=alias.anonymous_id,
            first_seen_ms=alias.at_ms,
            last_seen_ms=alias.at_ms,
            stage=STAGE_MERGED,
            merged_into=alias.user_id,
        )
        return marker, Merge(alias.user_id, alias.anonymous_id, None)
    if anonymous.merged_into == alias.user_id:  # a redelivered Alias: same answer
        return anonymous, Merge(alias.user_id, alias.anonymous_id, _snapshot(anonymous))
    if anonymous.merged_into is not None or is_known(anonymous):
        return anonymous, None
    return replace(anonymous, merged_into=alias.user_id), Merge(
        alias.user_id, alias.anonymous_id, _snapshot(anonymous)
    )


def is_known(state: UserState) -> bool:
    """Is ``state`` a known user's — signed up, or identified (other ids
    merged into it)? Its id is then no anonymous id anyone can claim."""
    return state.signup_ms is not None or bool(state.merged_from)


def _snapshot(anonymous: UserState) -> UserState | None:
    bare = replace(anonymous, merged_into=None)
    return None if bare.event_count == 0 else bare


def forward_to(state: UserState | None, event: Event) -> Forward | None:
    """A Forward when ``event`` belongs to an anonymous id already merged."""
    if state is None or state.merged_into is None:
        return None
    return Forward(state.merged_into, replace(event, user_id=state.merged_into))


def merge_states(user: UserState | None, merge: Merge, policy: Policy) -> UserState | None:
    """The user's state with the anonymous history folded in (idempotent).

    Counts and money add up; first times take the earlier, last times the
    later; the acquisition channel and campaign are the first touch's; the
    cart is the more recently changed one; consent and sign-up stay the
    user's own. Stage, health, RFM and tier are derived again."""
    if user is not None and merge.anonymous_id in user.merged_from:
        return user
    anon = merge.state
    if anon is None:
        if user is None:
            return None
        return replace(user, merged_from=(*user.merged_from, merge.anonymous_id))
    if user is None:
        adopted = replace(anon, user_id=merge.user_id, merged_from=(merge.anonymous_id,))
        return derive(adopted, adopted.last_seen_ms, policy)
    first_touch = anon if anon.first_seen_ms < user.first_seen_ms else user
    carts = [c for c in (user.cart, anon.cart) if c is not None]
    recent = tuple(dict.fromkeys((*anon.recent_events, *user.recent_events)))
    day, bits = _merged_activity(user, anon)
    merged = replace(
        user,
        first_seen_ms=min(user.first_seen_ms, anon.first_seen_ms),
        last_seen_ms=max(user.last_seen_ms, anon.last_seen_ms),
        event_count=user.event_count + anon.event_count,
        activation_ms=_earliest(user.activation_ms, anon.activation_ms),
        retained_ms=_earliest(user.retained_ms, anon.retained_ms),
        first_order_ms=_earliest(user.first_order_ms, anon.first_order_ms),
        last_order_ms=_latest(user.last_order_ms, anon.last_order_ms),
        order_count=user.order_count + anon.order_count,
        revenue=round(user.revenue + anon.revenue, 2),
        refunds=round(user.refunds + anon.refunds, 2),
        sessions=user.sessions + anon.sessions,
        activity_day=day,
        activity_bits=bits,
        cart=max(carts, key=lambda c: c.last_change_ms) if carts else None,
        channel=first_touch.channel or user.channel or anon.channel,
        campaign=first_touch.campaign or user.campaign or anon.campaign,
        recent_events=recent[-DEDUP_WINDOW:],
        merged_from=(*user.merged_from, merge.anonymous_id),
    )
    return derive(merged, max(merged.last_seen_ms, merged.evaluated_ms), policy)


def erasures_to_send(user: UserState | None, at_ms: int) -> list[Erase]:
    """``user`` is erased at ``at_ms``: so are the anonymous histories merged into it."""
    if user is None:
        return []
    return [Erase(user.user_id, anonymous_id, at_ms) for anonymous_id in user.merged_from]


def on_erase(anonymous: UserState | None, erase: Erase) -> UserState | None:
    """The anonymous side of an erasure: the marker, when the anonymous id
    was merged into the erased user (else, unchanged — a redelivery, or an id
    that belongs to someone else now)."""
    if anonymous is None or anonymous.stage == STAGE_ERASED:
        return anonymous
    if anonymous.merged_into != erase.user_id:
        return anonymous
    return erased_marker(erase.at_ms, anonymous)


def _earliest(a: int | None, b: int | None) -> int | None:
    return min(x for x in (a, b) if x is not None) if a is not None or b is not None else None


def _latest(a: int | None, b: int | None) -> int | None:
    return max(x for x in (a, b) if x is not None) if a is not None or b is not None else None


def _merged_activity(a: UserState, b: UserState) -> tuple[int, int]:
    day = max(a.activity_day, b.activity_day)
    mask = (1 << ACTIVITY_DAYS) - 1
    bits = 0
    for s in (a, b):
        if s.activity_bits and day - s.activity_day < ACTIVITY_DAYS:
            bits |= (s.activity_bits << (day - s.activity_day)) & mask
    return day, bits
