"""Identity: an anonymous visitor's history joins the user's once they are
known (``user_identified``, or a ``signed_up`` that carries both ids).

State is keyed by user id — or by anonymous id before sign-up — so the two
histories live on different partitions, often on different workers. Nothing
reads another partition's state; the merge is three messages on the internal
``user-events.identity`` topic, co-partitioned with ``user-events``:

1. the user's partition sees an event with both ids and sends
   :class:`Alias` (keyed by the anonymous id);
2. the anonymous id's partition marks its state ``merged_into`` the user and
   answers :class:`Merge` with a snapshot of that state (keyed by the user id);
   any later event of the anonymous id is sent on as :class:`Forward`;
3. the user's partition merges the snapshot (:func:`merge_states`) and applies
   forwarded events as its own.

Every step is idempotent: a redelivered Alias re-sends the same snapshot and
a Merge already in ``merged_from`` changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from streams.errors import StateError
from streams.events import Event
from streams.state import DEDUP_WINDOW, STAGE_MERGED, UserState, apply


@dataclass(frozen=True, slots=True)
class Alias:
    """To the anonymous id's partition: you are ``user_id`` now."""

    user_id: str
    anonymous_id: str

    @property
    def key(self) -> str:
        return self.anonymous_id


@dataclass(frozen=True, slots=True)
class Merge:
    """To the user's partition: the anonymous history to merge (None: there was none)."""

    user_id: str
    anonymous_id: str
    state: UserState | None

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class Forward:
    """To the user's partition: an event the anonymous id sent after the merge."""

    user_id: str
    event: Event

    @property
    def key(self) -> str:
        return self.user_id


IdentityMessage = Alias | Merge | Forward


def aliases_to_send(state: UserState | None, event: Event) -> list[Alias]:
    """An Alias when ``event`` links an anonymous id not merged yet."""
    anonymous_id = event.anonymous_id
    if event.user_id is None or anonymous_id is None or anonymous_id == event.user_id:
        return []
    if state is not None and anonymous_id in state.merged_from:
        return []
    return [Alias(event.user_id, anonymous_id)]


def on_alias(anonymous: UserState | None, alias: Alias, now_ms: int) -> tuple[UserState, Merge]:
    """The anonymous side: mark the state merged and answer with its snapshot.

    With no anonymous history yet, a bare marker state remembers the merge so
    that the id's later events are forwarded too."""
    if anonymous is None:
        marker = UserState(
            user_id=alias.anonymous_id,
            first_seen_ms=now_ms,
            last_seen_ms=now_ms,
            event_count=0,
            stage=STAGE_MERGED,
            merged_into=alias.user_id,
        )
        return marker, Merge(alias.user_id, alias.anonymous_id, None)
    if anonymous.merged_into == alias.user_id:  # a redelivered Alias: same answer
        return anonymous, Merge(alias.user_id, alias.anonymous_id, _snapshot(anonymous))
    snapshot = _snapshot(anonymous)
    return replace(anonymous, merged_into=alias.user_id), Merge(
        alias.user_id, alias.anonymous_id, snapshot
    )


def _snapshot(anonymous: UserState) -> UserState | None:
    bare = replace(anonymous, merged_into=None)
    return None if bare.event_count == 0 else bare


def forward_to(state: UserState | None, event: Event) -> Forward | None:
    """A Forward when ``event`` belongs to an anonymous id already merged."""
    if state is None or state.merged_into is None:
        return None
    return Forward(state.merged_into, replace(event, user_id=state.merged_into))


def merge_states(user: UserState | None, merge: Merge) -> UserState | None:
    """The user's state with the anonymous history folded in (idempotent)."""
    if user is not None and merge.anonymous_id in user.merged_from:
        return user
    anon = merge.state
    if anon is None:
        return (
            None
            if user is None
            else replace(user, merged_from=(*user.merged_from, merge.anonymous_id))
        )
    if user is None:
        return replace(anon, user_id=merge.user_id, merged_from=(merge.anonymous_id,))
    recent = tuple(dict.fromkeys((*anon.recent_events, *user.recent_events)))
    return replace(
        user,
        first_seen_ms=min(user.first_seen_ms, anon.first_seen_ms),
        last_seen_ms=max(user.last_seen_ms, anon.last_seen_ms),
        event_count=user.event_count + anon.event_count,
        recent_events=recent[-DEDUP_WINDOW:],
        merged_from=(*user.merged_from, merge.anonymous_id),
    )


def apply_forward(user: UserState | None, forward: Forward) -> UserState:
    return apply(user, forward.event)


# ---- wire format of the internal topic -------------------------------------
def encode_identity(message: IdentityMessage) -> bytes:
    doc: dict[str, Any]
    if isinstance(message, Alias):
        doc = {"kind": "alias", "user_id": message.user_id, "anonymous_id": message.anonymous_id}
    elif isinstance(message, Merge):
        doc = {
            "kind": "merge",
            "user_id": message.user_id,
            "anonymous_id": message.anonymous_id,
            "state": asdict(message.state) if message.state is not None else None,
        }
    else:
        doc = {"kind": "forward", "user_id": message.user_id, "event": message.event.to_dict()}
    return orjson.dumps(doc)


def decode_identity(raw: bytes) -> IdentityMessage:
    """Decode an internal identity message; :class:`StateError` if malformed
    (only userpulse writes this topic, so that is a bug, not bad input)."""
    try:
        doc = orjson.loads(raw)
        kind = doc["kind"]
        if kind == "alias":
            return Alias(doc["user_id"], doc["anonymous_id"])
        if kind == "merge":
            state = doc["state"]
            if state is not None:
                state = UserState(
                    **{
                        **state,
                        "recent_events": tuple(state.get("recent_events", ())),
                        "merged_from": tuple(state.get("merged_from", ())),
                    }
                )
            return Merge(doc["user_id"], doc["anonymous_id"], state)
        if kind == "forward":
            e = doc["event"]
            event = Event(
                event_id=e["event_id"],
                type=e["type"],
                timestamp_ms=e["timestamp"],
                user_id=e.get("user_id"),
                anonymous_id=e.get("anonymous_id"),
                properties=e.get("properties", {}),
                context=e.get("context", {}),
            )
            return Forward(doc["user_id"], event)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StateError(f"malformed identity message: {exc}") from exc
    raise StateError(f"unknown identity message kind {kind!r}")
