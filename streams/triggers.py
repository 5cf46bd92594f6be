"""Trigger events — what notification services subscribe to — and the
lifecycle triggers: stage, health, tier and RFM segment changes, and erasure.

``decide_on_event(old, new, event)`` decides them on an event;
:func:`streams.timed.decide_on_time` decides on time, with the marketing
rules (:mod:`streams.cart`, :mod:`streams.activation`, :mod:`streams.churn`).
Neither reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams import lifecycle, topics
from streams.events import Event
from streams.profile import profile_snapshot
from streams.userstate import STAGE_ERASED, STAGE_MERGED, AnyState, UserState

TYPE_STAGE_CHANGED = "stage_changed"
TYPE_HEALTH_CHANGED = "health_changed"
TYPE_TIER_CHANGED = "tier_changed"
TYPE_SEGMENT_CHANGED = "segment_changed"
TYPE_ERASED = "user_erased"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger, before it is stamped with ``emitted_at`` and sent."""

    trigger_id: str
    type: str
    topic: str
    user_id: str
    occurred_at_ms: int
    reason: Mapping[str, Any]
    profile: Mapping[str, Any]
    payload: Mapping[str, Any] = field(default_factory=dict)


def trigger_id_for(trigger_type: str, user_id: str, *anchor: str | int) -> str:
    """A deterministic id: the same condition (type, user, anchor) always
    gives the same id, so a replay de-duplicates downstream."""
    material = "\x1f".join([trigger_type, user_id, *map(str, anchor)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def state_trigger_id(trigger_type: str, state: AnyState, *anchor: str | int) -> str:
    """:func:`trigger_id_for` a trigger about ``state``'s history: a history
    begun after an erasure (``erased_ms``, the ``erasures``-th) gets ids of
    its own, so a returning user's ``stage_changed`` is not taken for the one
    before the erasure — even when two erasures have the same event time; a
    user never erased keeps the ids it always had, and one erased once the
    ids it had before ``erasures`` was counted."""
    erasures = state.erasures
    if erasures > 1:
        after = f"after:{state.erased_ms}:{erasures}"
        return trigger_id_for(trigger_type, state.user_id, *anchor, after)
    if state.erased_ms:
        return trigger_id_for(trigger_type, state.user_id, *anchor, f"after:{state.erased_ms}")
    return trigger_id_for(trigger_type, state.user_id, *anchor)


def encode_trigger(trigger: Trigger, *, emitted_at_ms: int) -> bytes:
    return orjson.dumps(
        {
            "trigger_id": trigger.trigger_id,
            "type": trigger.type,
            "user_id": trigger.user_id,
            "occurred_at": trigger.occurred_at_ms,
            "emitted_at": emitted_at_ms,
            "reason": trigger.reason,
            "profile": trigger.profile,
            "payload": trigger.payload,
        }
    )


def decide_on_event(old: UserState | None, new: UserState | None, event: Event) -> list[Trigger]:
    """Lifecycle triggers caused by ``event`` moving the user from ``old`` to
    ``new`` (``new`` is None after erasure): stage, health, tier and RFM
    segment changes, each with before/after and the rule."""
    if old is not None and old.stage == STAGE_ERASED:
        old = None  # after an erasure the user starts afresh
    if new is None:
        if old is None:
            return []
        return [
            Trigger(
                trigger_id=trigger_id_for(TYPE_ERASED, old.user_id, event.event_id),
                type=TYPE_ERASED,
                topic=topics.TRIGGERS_LIFECYCLE,
                user_id=old.user_id,
                occurred_at_ms=event.timestamp_ms,
                reason={"rule": "user_deleted", "event_id": event.event_id},
                profile={},  # erased: no personal data travels on
            )
        ]
    return decide_changes(lifecycle_of(old), new, event)


#: what the lifecycle triggers compare: (stage, health, tier, segment)
Lifecycle = tuple[str, str, str, str | None]


def lifecycle_of(state: AnyState | None) -> Lifecycle | None:
    """``state``'s :data:`Lifecycle` (None for a user not seen before)."""
    if state is None:
        return None
    return (state.stage, state.health, state.tier, state.segment)


def decide_changes(before: Lifecycle | None, new: AnyState, event: Event) -> list[Trigger]:
    """:func:`decide_on_event` for a user that is not erased, from what the
    user's lifecycle was ``before`` the event (None: not seen before)."""
    if new.stage == STAGE_MERGED or new.merged_into is not None:
        return []  # a merged anonymous id: its user speaks for it now
    triggers: list[Trigger] = []
    if before is None or before[0] != new.stage:
        was = before[0] if before is not None else None
        rule = _stage_rule(before is None, new)
        triggers.append(_change(TYPE_STAGE_CHANGED, new, event, was, new.stage, rule, new.stage))
    if before is None:
        return triggers
    _, health, tier, segment = before
    if health != new.health:
        triggers.append(
            _change(
                TYPE_HEALTH_CHANGED, new, event, health, new.health, "health_policy", event.event_id
            )
        )
    if tier != new.tier:
        triggers.append(
            _change(
                TYPE_TIER_CHANGED, new, event, tier, new.tier, "tier_thresholds", event.event_id
            )
        )
    if segment != new.segment:
        triggers.append(
            _change(
                TYPE_SEGMENT_CHANGED,
                new,
                event,
                segment,
                new.segment,
                "rfm_segment",
                event.event_id,
            )
        )
    return triggers


def _stage_rule(first: bool, new: AnyState) -> str:
    if first:
        return "first_seen"
    return {
        lifecycle.ACTIVATED: "key_action_within_activation_window",
        lifecycle.RETAINED: "active_again_in_a_later_period",
        lifecycle.MONETIZED: "first_order",
        lifecycle.REPEAT_BUYER: "repeat_orders",
        lifecycle.REFERRER: "referral_converted",
    }.get(new.stage, "stage_rule")


def _change(
    trigger_type: str,
    new: AnyState,
    event: Event,
    before: str | None,
    after: str | None,
    rule: str,
    anchor: str,
) -> Trigger:
    """A lifecycle change. A stage is reached once, so its id is anchored on
    the stage; health, tier and segment can move back and forth, so theirs on
    the event that moved them."""
    reason: dict[str, Any] = {
        "rule": rule,
        "from": before,
        "to": after,
        "event_id": event.event_id,
        "event_type": event.type,
        "numbers": {
            "orders": new.order_count,
            "ltv": new.ltv,
            "rfm": list(new.rfm) if new.rfm is not None else None,
            "last_seen": new.last_seen_ms,
            "referrals": new.referral_count,
        },
    }
    return Trigger(
        trigger_id=state_trigger_id(trigger_type, new, anchor),
        type=trigger_type,
        topic=topics.TRIGGERS_LIFECYCLE,
        user_id=new.user_id,
        occurred_at_ms=event.timestamp_ms,
        reason=reason,
        profile=profile_snapshot(new),
    )
