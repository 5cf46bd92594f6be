"""Derived messages: what one partition tells another.

State is partitioned by user, and no partition reads another's state. When an
event on one user's partition concerns another key — an anonymous id being
identified, a referrer being credited — a derived message goes to that key's
partition on the internal topic ``user-events.derived``, co-partitioned with
``user-events``. See :mod:`streams.identity` and docs/identity.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streams.codec import decode_state, encode_state
from streams.errors import StateError
from streams.events import Event
from streams.userstate import UserState


@dataclass(frozen=True, slots=True)
class Alias:
    """To the anonymous id's partition: you are ``user_id`` now (since the
    event time ``at_ms`` of the event that linked the two)."""

    user_id: str
    anonymous_id: str
    at_ms: int = 0

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

    def cause(self, at_ms: int) -> Event:
        """The merge as an event of the user's, for the triggers it causes."""
        return Event(
            event_id=f"merge:{self.anonymous_id}",
            type="identity_merged",
            timestamp_ms=at_ms,
            user_id=self.user_id,
            properties={"anonymous_id": self.anonymous_id},
        )


@dataclass(frozen=True, slots=True)
class Forward:
    """To the user's partition: an event the anonymous id sent after the merge."""

    user_id: str
    event: Event

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class ReferralCredit:
    """To the referrer's partition: ``referred_user_id`` signed up through you."""

    referrer_id: str
    referred_user_id: str
    at_ms: int
    event_id: str

    @property
    def key(self) -> str:
        return self.referrer_id

    def cause(self) -> Event:
        """The credit as an event of the referrer's, for the triggers it causes."""
        return Event(
            event_id=f"referral:{self.event_id}",
            type="referral_credited",
            timestamp_ms=self.at_ms,
            user_id=self.referrer_id,
            properties={"referred_user_id": self.referred_user_id},
        )


@dataclass(frozen=True, slots=True)
class Erase:
    """To the anonymous id's partition: the user you were merged into was
    erased at ``at_ms``; your history goes with it."""

    user_id: str
    anonymous_id: str
    at_ms: int

    @property
    def key(self) -> str:
        return self.anonymous_id


@dataclass(frozen=True, slots=True)
class Due:
    """To the user's own partition: deadlines up to ``until_ms`` have passed
    (sent by the timer; tables may only change inside the partition's stream)."""

    user_key: str
    until_ms: int

    @property
    def key(self) -> str:
        return self.user_key


DerivedMessage = Alias | Merge | Forward | ReferralCredit | Due | Erase


def encode_derived(message: DerivedMessage) -> bytes:
    doc: dict[str, Any]
    if isinstance(message, Alias):
        doc = {
            "kind": "alias",
            "user_id": message.user_id,
            "anonymous_id": message.anonymous_id,
            "at": message.at_ms,
        }
    elif isinstance(message, Merge):
        state = orjson.loads(encode_state(message.state)) if message.state is not None else None
        doc = {
            "kind": "merge",
            "user_id": message.user_id,
            "anonymous_id": message.anonymous_id,
            "state": state,
        }
    elif isinstance(message, Forward):
        doc = {"kind": "forward", "user_id": message.user_id, "event": message.event.to_dict()}
    elif isinstance(message, Erase):
        doc = {
            "kind": "erase",
            "user_id": message.user_id,
            "anonymous_id": message.anonymous_id,
            "at": message.at_ms,
        }
    elif isinstance(message, Due):
        doc = {"kind": "due", "key": message.user_key, "until": message.until_ms}
    else:
        doc = {
            "kind": "referral",
            "referrer_id": message.referrer_id,
            "referred_user_id": message.referred_user_id,
            "at": message.at_ms,
            "event_id": message.event_id,
        }
    return orjson.dumps(doc)


def decode_derived(raw: bytes) -> DerivedMessage:
    """Decode a derived message; :class:`StateError` if malformed (only
    userpulse writes this topic, so that is a bug, not bad input)."""
    try:
        doc = orjson.loads(raw)
        kind = doc["kind"]
        if kind == "alias":
            return Alias(doc["user_id"], doc["anonymous_id"], int(doc.get("at", 0)))
        if kind == "merge":
            state = doc["state"]
            snapshot = decode_state(orjson.dumps(state)) if state is not None else None
            return Merge(doc["user_id"], doc["anonymous_id"], snapshot)
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
        if kind == "due":
            return Due(doc["key"], doc["until"])
        if kind == "erase":
            return Erase(doc["user_id"], doc["anonymous_id"], int(doc["at"]))
        if kind == "referral":
            return ReferralCredit(
                doc["referrer_id"], doc["referred_user_id"], doc["at"], doc["event_id"]
            )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StateError(f"malformed derived message: {exc}") from exc
    raise StateError(f"unknown derived message kind {kind!r}")
