"""Per-user state and the pure transition ``apply(state, event) -> state``.

The state is an immutable value; the table stores it as compact orjson bytes
(:func:`encode_state` / :func:`decode_state`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from streams.errors import StateError
from streams.events import Event

SCHEMA_VERSION = 1

#: How many recent event ids per user are remembered to drop redeliveries.
#: Each costs 19 bytes of serialised state (a 64-bit digest in hex, quoted).
DEDUP_WINDOW = 16

STAGE_ACQUIRED = "acquired"
#: an anonymous id whose history now belongs to a known user (see streams.identity)
STAGE_MERGED = "merged"


@dataclass(frozen=True, slots=True)
class UserState:
    """What userpulse knows about one user (keyed by user or anonymous id)."""

    user_id: str
    first_seen_ms: int
    last_seen_ms: int
    event_count: int
    stage: str
    recent_events: tuple[str, ...] = ()
    #: anonymous ids whose history was merged into this user (identity)
    merged_from: tuple[str, ...] = ()
    #: set on an anonymous id's state once it was merged into that user;
    #: later events of the anonymous id are forwarded there
    merged_into: str | None = None
    #: bumped by every stored change; orders the Redis projection's writes
    revision: int = 0
    schema_version: int = SCHEMA_VERSION


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id for the de-duplication window."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def seen(state: UserState, event: Event) -> bool:
    """True when ``event`` is one of the user's last DEDUP_WINDOW events."""
    return event_digest(event.event_id) in state.recent_events


def apply(state: UserState | None, event: Event) -> UserState:
    """The state after ``event``; ``state`` is ``None`` for a user never seen."""
    if state is None:
        return UserState(
            user_id=event.key,
            first_seen_ms=event.timestamp_ms,
            last_seen_ms=event.timestamp_ms,
            event_count=1,
            stage=STAGE_ACQUIRED,
            recent_events=(event_digest(event.event_id),),
        )
    if seen(state, event):
        return state  # the same event delivered again changes nothing
    return replace(
        state,
        first_seen_ms=min(state.first_seen_ms, event.timestamp_ms),
        last_seen_ms=max(state.last_seen_ms, event.timestamp_ms),
        event_count=state.event_count + 1,
        recent_events=(*state.recent_events[-(DEDUP_WINDOW - 1) :], event_digest(event.event_id)),
    )


def encode_state(state: UserState) -> bytes:
    return orjson.dumps(asdict(state))


def decode_state(raw: bytes) -> UserState:
    try:
        doc: dict[str, Any] = orjson.loads(raw)
        doc["recent_events"] = tuple(doc.get("recent_events", ()))
        doc["merged_from"] = tuple(doc.get("merged_from", ()))
        return UserState(**doc)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
