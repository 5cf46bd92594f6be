"""The parser of the input contract: bytes from ``user-events`` → a typed
:class:`Event`, or an :class:`~streams.errors.EventError` that says exactly
what is wrong.

The contract itself — event types, context, rejection codes, :class:`Limits`,
the bounds and patterns — is declared as data in :mod:`streams.contract`;
:mod:`streams.event_rules` compiles those tables once, at import, into the
checks :func:`parse_event` runs on properties and context, and
:mod:`streams.schema` renders the same tables as JSON Schema. This module
checks the envelope (ids, type; the timestamp through
:mod:`streams.timestamps`) and builds the event.
docs/events.md is the contract a producer reads.

Nothing here reads a clock or the environment: ``now_ms`` is passed in.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson

from streams.contract import (
    DEFAULT_LIMITS,
    MAX_TYPE_LENGTH,
    MIN_TIMESTAMP_MS,
    TYPE_PATTERN,
    Identity,
    Limits,
)
from streams.errors import EventError
from streams.event_fields import (
    check_id,
    json_path,
    kind_of,
    quoted,
    wrong_type,
)
from streams.event_rules import CONTEXT_RULES, TYPE_RULES, check_shape
from streams.timestamps import parse_timestamp

# the contract's type pattern
_TYPE_RE: Final = re.compile(TYPE_PATTERN)


# ---------------------------------------------------------------------------
# The event


@dataclass(frozen=True, slots=True)
class Event:
    """One validated user behaviour event."""

    event_id: str
    type: str
    timestamp_ms: int
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The partitioning key: the user id, or the anonymous id before sign-up."""
        return self.user_id or self.anonymous_id or ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "timestamp": self.timestamp_ms,
            "properties": dict(self.properties),
            "context": dict(self.context),
        }
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.anonymous_id is not None:
            out["anonymous_id"] = self.anonymous_id
        return out


def _compile_event() -> Callable[[str, str, int, str | None, str | None, Any, Any], Event]:
    """``Event(...)`` with every field given, its slots set directly (what the
    frozen dataclass's ``__init__`` does, twice as fast: it runs per event)."""
    names = [f.name for f in fields(Event)]
    scope: dict[str, Any] = {"_new": object.__new__, "Event": Event}
    scope |= {f"_s_{n}": Event.__dict__[n].__set__ for n in names}
    lines = [f"def event({', '.join(names)}):", "    new = _new(Event)"]
    lines += [f"    _s_{n}(new, {n})" for n in names]
    lines.append("    return new")
    exec("\n".join(lines), scope)
    made: Callable[[str, str, int, str | None, str | None, Any, Any], Event] = scope["event"]
    return made


_event: Final = _compile_event()


def encode_event(event: Event) -> bytes:
    """The canonical record of ``event`` (timestamp as epoch ms); it parses
    back to an equal event."""
    return orjson.dumps(event.to_dict())


# ---------------------------------------------------------------------------
# Parsing

_ENVELOPE: Final = (
    "event_id",
    "type",
    "timestamp",
    "user_id",
    "anonymous_id",
    "properties",
    "context",
)
_ENVELOPE_KEYS: Final = frozenset(_ENVELOPE)
#: Common spellings from other trackers (Segment, Snowplow …) → ours.
_ENVELOPE_ALIASES: Final[Mapping[str, str]] = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "event_id",
    "eventId": "event_id",
    "id": "event_id",
    "event": "type",
    "event_type": "type",
    "name": "type",
    "ts": "timestamp",
    "time": "timestamp",
    "timestamp_ms": "timestamp",
    "sentAt": "timestamp",
    "originalTimestamp": "timestamp",
    "props": "properties",
    "traits": "properties",
}


def parse_event(raw: bytes, *, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Validate ``raw`` and return the event, or raise :class:`EventError`.

    Checks run in a fixed order and the first problem is reported: size,
    encoding and JSON, the envelope fields, ``event_id``, ``type``, the ids,
    ``timestamp``, ``properties`` (per type), ``context``.
    """
    if len(raw) > limits.max_bytes:
        raise EventError(
            "too_large",
            "$",
            f"record is {len(raw)} bytes; the limit is {limits.max_bytes} "
            "(USERPULSE_MAX_EVENT_BYTES): move bulky data out of the event",
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _undecodable(raw, exc) from None
    if type(doc) is not dict:
        raise EventError("not_object", "$", f"expected a JSON object, got {kind_of(doc)}")
    if raw.count(b"{") + raw.count(b"[") > limits.max_depth:  # else no deeper than that
        _check_depth(doc, limits.max_depth)
    if not _ENVELOPE_KEYS.issuperset(doc):
        raise _unknown_envelope_field(doc)

    max_id = limits.max_id_length
    event_id = doc.get("event_id")
    if event_id is None:
        raise EventError("missing_field", "$.event_id", "event_id is required: a unique id")
    if not (
        type(event_id) is str and event_id and len(event_id) <= max_id and event_id.isprintable()
    ):
        check_id(
            event_id, "$", "event_id", limits
        )  # the common case is inline, this names the problem

    etype = doc.get("type")
    if etype is None:
        raise EventError("missing_field", "$.type", "type is required, e.g. product_viewed")
    spec = TYPE_RULES.get(etype) if type(etype) is str else None
    if spec is None:
        _check_type_name(etype)

    user_id = doc.get("user_id")
    if user_id is not None and not (
        type(user_id) is str and user_id and len(user_id) <= max_id and user_id.isprintable()
    ):
        check_id(user_id, "$", "user_id", limits)
    anonymous_id = doc.get("anonymous_id")
    if anonymous_id is not None:
        check_id(anonymous_id, "$", "anonymous_id", limits)
    if spec is not None and spec.identity != "either":
        _check_identity(etype, spec.identity, user_id, anonymous_id)
    elif user_id is None and anonymous_id is None:
        raise EventError(
            "missing_field",
            "$.user_id",
            "one of user_id or anonymous_id is required (anonymous_id before sign-up)",
        )

    timestamp = doc.get("timestamp")
    if (
        type(timestamp) is int
        and timestamp >= MIN_TIMESTAMP_MS
        and timestamp - now_ms <= limits.max_future_skew_ms
    ):
        timestamp_ms: int = timestamp  # epoch ms, in range: the common case
    else:
        timestamp_ms = parse_timestamp(timestamp, now_ms, limits)

    properties = doc.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        raise wrong_type("$", "properties", "an object", properties)
    if spec is not None and spec.fields and not spec.passes(properties, limits):
        check_shape(properties, "$.properties", spec, limits)

    context = doc.get("context")
    if context is None:
        context = {}
    elif type(context) is not dict:
        raise wrong_type("$", "context", "an object", context)
    elif context and not CONTEXT_RULES.passes(context, limits):
        check_shape(context, "$.context", CONTEXT_RULES, limits)

    return _event(event_id, etype, timestamp_ms, user_id, anonymous_id, properties, context)


def _check_depth(doc: dict[str, Any], max_depth: int) -> None:
    """Raise ``too_deep`` at the first object or array of ``doc`` deeper than
    ``max_depth`` levels (``doc`` is level 1)."""
    stack: list[tuple[Any, str, int]] = [(doc, "$", 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > max_depth:
            raise EventError(
                "too_deep",
                path,
                f"objects and arrays are nested {depth} levels deep here (the record is "
                f"level 1); the limit is {max_depth}: flatten the data",
            )
        if type(value) is dict:
            items: Any = ((json_path(path, str(k)), v) for k, v in value.items())
        else:
            items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        children = [(v, p, depth + 1) for p, v in items if type(v) is dict or type(v) is list]
        stack.extend(reversed(children))


def _undecodable(raw: bytes, exc: orjson.JSONDecodeError) -> EventError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return EventError(
            "invalid_utf8",
            "$",
            f"record is not valid UTF-8 (byte {bad.start}: {bad.reason}); encode JSON as UTF-8",
        )
    if not text.strip():
        return EventError("not_json", "$", "record value is empty: send one JSON object")
    if text.startswith("\ufeff"):
        return EventError("not_json", "$", "record starts with a byte-order mark: remove it")
    return EventError("not_json", "$", f"not valid JSON: {exc}")


def _unknown_envelope_field(doc: Mapping[str, Any]) -> EventError:
    name = next(key for key in doc if key not in _ENVELOPE_KEYS)
    hint = _ENVELOPE_ALIASES.get(name)
    if hint is None:
        close = difflib.get_close_matches(name, _ENVELOPE, n=1)
        hint = close[0] if close else None
    guess = f"did you mean {hint!r}? " if hint is not None else ""
    message = (
        f"unknown field {quoted(name)}: {guess}the envelope has only {', '.join(_ENVELOPE)}; "
        "event data goes in properties, circumstances in context"
    )
    return EventError("unknown_field", json_path("$", name), message)


def _check_type_name(etype: Any) -> None:
    if type(etype) is not str:
        raise wrong_type("$", "type", "a string", etype)
    if len(etype) > MAX_TYPE_LENGTH:
        raise EventError(
            "bad_type",
            "$.type",
            f"type is {len(etype)} characters; the limit is {MAX_TYPE_LENGTH}",
        )
    if not etype:
        raise EventError("bad_type", "$.type", "type must not be empty, e.g. product_viewed")
    if _TYPE_RE.fullmatch(etype) is None:
        message = f"type {quoted(etype)} is not a snake_case name (lower-case words joined by _)"
        suggestion = _snake_case(etype)
        if suggestion is not None:
            message += f"; did you mean {suggestion!r}?"
        raise EventError("bad_type", "$.type", message)


def _snake_case(name: str) -> str | None:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    candidate = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    if candidate and len(candidate) <= MAX_TYPE_LENGTH and _TYPE_RE.fullmatch(candidate):
        return candidate
    return None


def _check_identity(etype: str, identity: Identity, user_id: Any, anonymous_id: Any) -> None:
    if user_id is None:
        raise EventError("missing_field", "$.user_id", f"{etype} requires user_id")
    if identity == "both" and anonymous_id is None:
        raise EventError(
            "missing_field",
            "$.anonymous_id",
            f"{etype} requires anonymous_id too: the anonymous id that becomes user_id",
        )
