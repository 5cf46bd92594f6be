"""The pure transition of a user's state: ``apply(state, event, policy)``.

The stored state is an immutable value (:class:`~streams.userstate.UserState`).
``apply`` folds the event into the facts (counts, times, cart, orders,
consent …) and then re-derives what the growth team reasons about — stage,
health, RFM and tier (:func:`streams.lifecycle.derive_fields`) — at the
user's event time, so the same history always gives the same state. Inside a
batch the engine folds events into a mutable
:class:`~streams.userstate.WorkingState` with the same rules
(:func:`fold_into`; ``apply`` is that fold on a copy). The cart's rules are
:mod:`streams.cart`'s, activation's and retention's :mod:`streams.activation`'s;
docs/state.md describes every field.
"""

from __future__ import annotations

import hashlib
from typing import Any

from streams.activation import activation_and_retention
from streams.cart import CART_EVENTS, bought_from, cart_change
from streams.events import Event
from streams.lifecycle import derive_fields
from streams.policy import DAY_MS, DEFAULT_POLICY, Policy, Precomputed, precomputed
from streams.userstate import (
    ACTIVITY_DAYS,
    DEDUP_WINDOW,
    ERASURE_EVENT,
    REFERRAL_WINDOW,
    STAGE_ERASED,
    AnyState,
    UserState,
    WorkingState,
    evolve,
    freeze,
    fresh,
    thaw,
)


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id for the de-duplication window."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def new_state(user_id: str, at_ms: int) -> UserState:
    return UserState(user_id=user_id, first_seen_ms=at_ms, last_seen_ms=at_ms)


def erased_marker(at_ms: int, erased: AnyState | None) -> UserState:
    """The marker an erasure at ``at_ms`` of the state ``erased`` leaves
    under the user's key: no facts, not even the id (docs/state.md,
    "Erasure") — only how many erasures the key has seen."""
    if erased is None:
        erasures = 1
    elif erased.stage == STAGE_ERASED:
        erasures = erased.erasures  # erased again: no history began in between
    else:
        erasures = erased.erasures + 1
    return UserState(
        user_id="",
        first_seen_ms=at_ms,
        last_seen_ms=at_ms,
        stage=STAGE_ERASED,
        erasures=erasures,
    )


def apply(
    state: UserState | None, event: Event, policy: Policy = DEFAULT_POLICY
) -> UserState | None:
    """The state after ``event``: ``None`` for a user never seen; returns the
    very same object when the event changes nothing (a redelivery), and
    ``None`` after ``user_deleted`` (erasure)."""
    if event.type == ERASURE_EVENT:
        return None
    erased_at = erasures = 0
    if state is not None and state.stage == STAGE_ERASED:
        if event.timestamp_ms < state.last_seen_ms:
            return state  # from before the erasure (a replay): stays erased
        erased_at, erasures = state.last_seen_ms, state.erasures
        state = None  # the user came back: a new, empty history
    digest = event_digest(event.event_id)
    if state is None:
        working = fresh(event.key, event.timestamp_ms)
        working.erased_ms = erased_at
        working.erasures = erasures
    elif digest in state.recent_events:
        return state
    else:
        working = thaw(state)
    fold_into(working, event, digest, precomputed(policy))
    return freeze(working)


def derive(state: UserState, now_ms: int, policy: Policy) -> UserState:
    """Re-derive stage, health, RFM, segment and tier at ``now_ms``."""
    evaluated, stage, health, rfm, segment, tier = derive_fields(state, now_ms, precomputed(policy))
    return evolve(
        state,
        {
            "evaluated_ms": evaluated,
            "stage": stage,
            "health": health,
            "rfm": rfm,
            "segment": segment,
            "tier": tier,
        },
    )


# ---- folding an event into the facts ---------------------------------------
def fold_into(state: WorkingState, event: Event, digest: str, pre: Precomputed) -> None:
    """Fold ``event`` (whose :func:`event_digest` is ``digest``, not seen yet)
    into the facts of ``state``, then derive again — what :func:`apply` does
    to a stored state, in place: every fact is computed from the values
    before the event, as one change. ``pre``: the policy's precomputed values."""
    ts = event.timestamp_ms
    props = event.properties
    context = event.context
    last_seen = state.last_seen_ms
    count = state.event_count
    if ts < state.first_seen_ms:
        state.first_seen_ms = ts
    if ts > last_seen:
        state.last_seen_ms = ts
    state.event_count = count + 1
    state.recent_events = (*state.recent_events[_KEEP_EVENTS:], digest)  # _remember, inline
    # the bit of ts's UTC day in the rolling activity bitmap
    day = ts // DAY_MS
    bits = state.activity_bits
    if bits == 0:
        state.activity_day = day
        state.activity_bits = 1
    elif day > state.activity_day:
        state.activity_bits = ((bits << (day - state.activity_day)) & _ACTIVITY_MASK) | 1
        state.activity_day = day
    elif state.activity_day - day < ACTIVITY_DAYS:
        state.activity_bits = bits | (1 << (state.activity_day - day))
    warned = state.churn_warned_ms
    if warned is not None and ts >= warned:
        state.churn_warned_ms = None  # the user is back: the episode ends
    if count > 0 and ts - last_seen >= pre.dormant_ms:
        state.resurrected_ms = ts
    if context:
        zone = context.get("timezone")
        if isinstance(zone, str) and zone != state.timezone:
            state.timezone = zone
        if state.channel is None:
            channel = context.get("channel")
            if isinstance(channel, str):
                state.channel = channel
            campaign = context.get("campaign")
            if isinstance(campaign, dict) and campaign:
                state.campaign = "/".join(
                    str(campaign.get(k) or "") for k in ("source", "medium", "name")
                )
    etype = event.type
    if etype in CART_EVENTS:
        state.cart = cart_change(state.cart, event)
    elif etype == "session_started":
        state.sessions += 1
    elif etype == "signed_up":
        signup = state.signup_ms
        state.signup_ms = ts if signup is None or ts < signup else signup
        referrer = props.get("referrer_id")
        if isinstance(referrer, str) and referrer != event.key and state.referrer_id is None:
            state.referrer_id = referrer
    elif etype == "order_completed":
        _order(state, event)
    elif etype == "order_refunded":
        state.refunds = round(state.refunds + float(props.get("amount", 0.0)), 2)
    elif etype == "consent_updated":
        channels = props.get("channels", {})
        merged = dict(state.consent)
        merged.update({k: bool(v) for k, v in channels.items()})
        state.consent = tuple(sorted(merged.items()))
    elif etype == "referral_converted":
        credit = credit_referral(state, str(props.get("referred_user_id", "")))
        if credit:
            state.referral_count = credit["referral_count"]
            state.recent_referrals = credit["recent_referrals"]
    activation_and_retention(state, etype, ts, pre)
    # derived as of the newest time the user was looked at: an event older than
    # a decision already taken on time (a late event) must not turn the clock back
    last_seen = state.last_seen_ms
    evaluated = state.evaluated_ms
    (
        state.evaluated_ms,
        state.stage,
        state.health,
        state.rfm,
        state.segment,
        state.tier,
    ) = derive_fields(state, last_seen if last_seen >= evaluated else evaluated, pre)


#: the slice of the de-duplication window that stays when one more is remembered
_KEEP_EVENTS = -(DEDUP_WINDOW - 1)


_ACTIVITY_MASK = (1 << ACTIVITY_DAYS) - 1


def _order(state: WorkingState, event: Event) -> None:
    ts = event.timestamp_ms
    revenue = float(event.properties.get("revenue", 0.0))
    state.order_count += 1
    state.revenue = round(state.revenue + revenue, 2)
    first, last = state.first_order_ms, state.last_order_ms
    state.first_order_ms = ts if first is None or ts < first else first
    state.last_order_ms = ts if last is None or ts > last else last
    cart = state.cart
    if cart is not None and ts >= cart.last_change_ms and bought_from(cart, event):
        state.cart = None  # the order closes the open cart


def credit_referral(state: AnyState, referred_user_id: str) -> dict[str, Any]:
    """Count a converted referral once per referred user (within the window)."""
    if not referred_user_id or referred_user_id in state.recent_referrals:
        return {}
    return {
        "referral_count": state.referral_count + 1,
        "recent_referrals": _remember(state.recent_referrals, referred_user_id, REFERRAL_WINDOW),
    }


def _remember(window: tuple[str, ...], item: str, size: int) -> tuple[str, ...]:
    """``window`` with ``item`` appended, keeping the last ``size``."""
    return (*window[-(size - 1) :], item)
