"""The profile: what is mirrored to Redis and snapshotted into triggers."""

from __future__ import annotations

from typing import Any

from streams import lifecycle
from streams.userstate import STAGE_ERASED, AnyState, UserState

#: Redis membership indexes: dimension → the state field it indexes
INDEX_DIMENSIONS = ("stage", "health", "segment", "tier")


def index_values(dimension: str) -> dict[str, str]:
    """What a user may name a value of ``dimension`` by → the value the index
    holds: each value itself, and for ``segment`` its label too (the RFM
    segments' Chinese names). An unknown dimension has none."""
    if dimension == "segment":
        return {
            **{sid: sid for sid, _label in lifecycle.SEGMENTS.values()},
            **{label: sid for sid, label in lifecycle.SEGMENTS.values()},
        }
    known = {"stage": lifecycle.STAGES, "health": lifecycle.HEALTHS, "tier": lifecycle.TIERS}
    return {value: value for value in known.get(dimension, ())}


def mirrored(state: AnyState) -> bool:
    """Is ``state``'s profile mirrored to Redis? Every user's is — one known
    only as a referrer (no events of its own) included — but not an erasure
    marker's (its profile is deleted) nor the bare marker of an anonymous id
    merged before it had any history (no profile of its own to show)."""
    if state.stage == STAGE_ERASED:
        return False
    return state.event_count > 0 or state.merged_into is None


def profile_snapshot(state: AnyState) -> dict[str, Any]:
    """The profile context a trigger carries so a consumer need not look it up."""
    cart = state.cart
    return {
        "stage": state.stage,
        "health": state.health,
        "segment": state.segment,
        "tier": state.tier,
        "rfm": list(state.rfm) if state.rfm is not None else None,
        "ltv": state.ltv,
        "orders": state.order_count,
        "first_seen": state.first_seen_ms,
        "last_seen": state.last_seen_ms,
        "event_count": state.event_count,
        "cart_value": cart.value if cart is not None else 0.0,
        "consent": dict(state.consent),
    }


def profile_fields(state: UserState, *, version: int) -> dict[str, str]:
    """The flat field map of the user's Redis hash (absent values are left
    out). ``version`` orders writes: the projection never lets an older
    version overwrite a newer one."""
    cart = state.cart
    raw: dict[str, Any] = {
        "user_id": state.user_id,
        "version": version,
        "stage": state.stage,
        "health": state.health,
        "segment": state.segment,
        "rfm": "".join(map(str, state.rfm)) if state.rfm is not None else None,
        "tier": state.tier,
        "ltv": state.ltv,
        "orders": state.order_count,
        "first_seen": state.first_seen_ms,
        "last_seen": state.last_seen_ms,
        "event_count": state.event_count,
        #: the time health, RFM and the model's numbers were computed as of
        "evaluated_at": state.evaluated_ms or None,
        "sessions": state.sessions,
        "cart_value": cart.value if cart is not None else None,
        "cart_items": sum(i.quantity for i in cart.items) if cart is not None else None,
        "channel": state.channel,
        "referrals": state.referral_count or None,
        "merged_into": state.merged_into,
        "merged_from": ",".join(state.merged_from) or None,
    }
    for channel, granted in state.consent:
        raw[f"consent:{channel}"] = "1" if granted else "0"
    return {k: str(v) for k, v in raw.items() if v is not None}


def profile_indexes(state: UserState) -> dict[str, str | None]:
    """Index memberships: dimension → value (None: in no set of that dimension)."""
    return {dimension: getattr(state, dimension) for dimension in INDEX_DIMENSIONS}
