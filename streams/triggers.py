"""Trigger events — what notification services subscribe to — and the pure
decisions that produce them.

``decide_on_event(old, new, event)`` decides on an event; later,
``decide_on_time(state, now, policy)`` decides on time. Neither reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams import topics
from streams.events import Event
from streams.profile import profile_snapshot
from streams.state import UserState

TYPE_STAGE_CHANGED = "stage_changed"


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


def decide_on_event(old: UserState | None, new: UserState, event: Event) -> list[Trigger]:
    """Triggers caused by ``event`` moving the user from ``old`` to ``new``."""
    if old is None or old.stage != new.stage:
        before = old.stage if old is not None else None
        return [
            Trigger(
                trigger_id=trigger_id_for(TYPE_STAGE_CHANGED, new.user_id, new.stage),
                type=TYPE_STAGE_CHANGED,
                topic=topics.TRIGGERS_LIFECYCLE,
                user_id=new.user_id,
                occurred_at_ms=event.timestamp_ms,
                reason={
                    "rule": "first_seen" if old is None else "stage_rule",
                    "from": before,
                    "to": new.stage,
                    "event_id": event.event_id,
                    "event_type": event.type,
                },
                profile=profile_snapshot(new),
            )
        ]
    return []
