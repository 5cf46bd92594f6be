"""The parser of the input contract: bytes from ``user-events`` → a typed
:class:`Event`, or an :class:`~streams.errors.EventError` that says exactly
what is wrong.

The contract itself — :data:`EVENT_TYPES`, :data:`CONTEXT`,
:data:`REJECTION_CODES`, :class:`Limits` and the bounds and patterns — is
declared as data in :mod:`streams.contract`; :func:`parse_event` compiles those
tables once, at import, into the checks it runs. :mod:`streams.schema` renders
the same tables as JSON Schema. Their public names are re-exported here (see
``__all__``), so ``from streams.events import EVENT_TYPES, json_schema`` keeps
working, and so does ``python -m streams.events`` (it prints the schema). docs/events.md is the
contract a producer reads.

Nothing here reads a clock or the environment: ``now_ms`` is passed in.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import sys
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import orjson

from streams.contract import (
    CAMPAIGN,
    CONSENT_CHANNELS,
    CONTEXT,
    CURRENCY_PATTERN,
    DEFAULT_LIMITS,
    EVENT_TYPES,
    ID_PATTERN,
    ISO_TIMESTAMP_PATTERN,
    LINE_ITEM,
    LOCALE_PATTERN,
    MAX_LOCALE_LENGTH,
    MAX_TIMEZONE_LENGTH,
    MAX_TYPE_LENGTH,
    MIN_TIMESTAMP_MS,
    REJECTION_CODES,
    TIMEZONE_PATTERN,
    TYPE_PATTERN,
    EventType,
    Field,
    Identity,
    Kind,
    Limits,
    Shape,
)
from streams.errors import EventError
from streams.schema import SCHEMA_ID, json_schema, render_json_schema

#: The parser (this module), the contract tables it checks against
#: (streams.contract) and the JSON Schema rendering (streams.schema).
__all__ = [
    "CAMPAIGN",
    "CONSENT_CHANNELS",
    "CONTEXT",
    "CURRENCY_PATTERN",
    "DEFAULT_LIMITS",
    "EVENT_TYPES",
    "ID_PATTERN",
    "ISO_TIMESTAMP_PATTERN",
    "LINE_ITEM",
    "LOCALE_PATTERN",
    "MAX_TYPE_LENGTH",
    "MIN_TIMESTAMP_MS",
    "REJECTION_CODES",
    "SCHEMA_ID",
    "TIMEZONE_PATTERN",
    "TYPE_PATTERN",
    "Check",
    "Event",
    "EventType",
    "Field",
    "Identity",
    "Kind",
    "Limits",
    "Shape",
    "encode_event",
    "json_schema",
    "parse_event",
    "render_json_schema",
]

# ---------------------------------------------------------------------------
# Patterns compiled for the hot path (all but the zoneless one are the
# contract's, from streams.contract)

_ZONELESS_PATTERN: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
)

_TYPE_RE: Final = re.compile(TYPE_PATTERN)
_CONTROL_RE: Final = re.compile(r"[\u0000-\u001f\u007f-\u009f]")
_CURRENCY_RE: Final = re.compile(CURRENCY_PATTERN)
_LOCALE_RE: Final = re.compile(LOCALE_PATTERN)
_TIMEZONE_RE: Final = re.compile(TIMEZONE_PATTERN)
_ISO_RE: Final = re.compile(ISO_TIMESTAMP_PATTERN)
_ZONELESS_RE: Final = re.compile(_ZONELESS_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

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
        raise EventError("not_object", "$", f"expected a JSON object, got {_kind(doc)}")
    if not _ENVELOPE_KEYS.issuperset(doc):
        raise _unknown_envelope_field(doc)

    max_id = limits.max_id_length
    event_id = doc.get("event_id")
    if event_id is None:
        raise EventError("missing_field", "$.event_id", "event_id is required: a unique id")
    if not (
        type(event_id) is str and event_id and len(event_id) <= max_id and event_id.isprintable()
    ):
        _check_id(
            event_id, "$", "event_id", limits
        )  # the common case is inline, this names the problem

    etype = doc.get("type")
    if etype is None:
        raise EventError("missing_field", "$.type", "type is required, e.g. product_viewed")
    spec = _TYPE_RULES.get(etype) if type(etype) is str else None
    if spec is None:
        _check_type_name(etype)

    user_id = doc.get("user_id")
    if user_id is not None and not (
        type(user_id) is str and user_id and len(user_id) <= max_id and user_id.isprintable()
    ):
        _check_id(user_id, "$", "user_id", limits)
    anonymous_id = doc.get("anonymous_id")
    if anonymous_id is not None:
        _check_id(anonymous_id, "$", "anonymous_id", limits)
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
        timestamp_ms = _timestamp(timestamp, now_ms, limits)

    properties = doc.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        raise _wrong_type("$", "properties", "an object", properties)
    if spec is not None and spec.fields and not spec.passes(properties, limits):
        _check_shape(properties, "$.properties", spec, limits)

    context = doc.get("context")
    if context is None:
        context = {}
    elif type(context) is not dict:
        raise _wrong_type("$", "context", "an object", context)
    elif context and not _CONTEXT_RULES.passes(context, limits):
        _check_shape(context, "$.context", _CONTEXT_RULES, limits)

    return _event(event_id, etype, timestamp_ms, user_id, anonymous_id, properties, context)


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
        f"unknown field {_show(name)}: {guess}the envelope has only {', '.join(_ENVELOPE)}; "
        "event data goes in properties, circumstances in context"
    )
    return EventError("unknown_field", _path("$", name), message)


def _check_type_name(etype: Any) -> None:
    if type(etype) is not str:
        raise _wrong_type("$", "type", "a string", etype)
    if len(etype) > MAX_TYPE_LENGTH:
        raise EventError(
            "bad_type",
            "$.type",
            f"type is {len(etype)} characters; the limit is {MAX_TYPE_LENGTH}",
        )
    if not etype:
        raise EventError("bad_type", "$.type", "type must not be empty, e.g. product_viewed")
    if _TYPE_RE.fullmatch(etype) is None:
        message = f"type {_show(etype)} is not a snake_case name (lower-case words joined by _)"
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


def _timestamp(value: Any, now_ms: int, limits: Limits) -> int:
    path = "$.timestamp"
    kind = type(value)
    if kind is int:
        ts: int = value
        if ts < MIN_TIMESTAMP_MS:
            if MIN_TIMESTAMP_MS <= ts * 1000 <= now_ms + limits.max_future_skew_ms:
                raise EventError(
                    "bad_timestamp",
                    path,
                    f"timestamp {ts} looks like epoch seconds; send epoch milliseconds "
                    f"({ts * 1000}) or ISO-8601 with a zone",
                )
            raise EventError(
                "bad_timestamp",
                path,
                f"timestamp {ts} is before 1973-03-03T09:46:40Z ({MIN_TIMESTAMP_MS} ms), "
                "the earliest accepted; send epoch milliseconds",
            )
    elif kind is str:
        ts = _iso_timestamp(value)
    elif value is None:
        raise EventError(
            "missing_field", path, "timestamp is required: epoch ms or ISO-8601 with a zone"
        )
    elif kind is float:
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {value!r} is not a whole number: send integer epoch milliseconds "
            "(no decimal point or exponent)",
        )
    else:
        raise _wrong_type("$", "timestamp", "epoch milliseconds or an ISO-8601 string", value)
    ahead = ts - now_ms
    if ahead > limits.max_future_skew_ms:
        raise EventError(
            "future_timestamp",
            path,
            f"timestamp is {_duration(ahead)} ahead of the pipeline clock; the allowed skew is "
            f"{_duration(limits.max_future_skew_ms)}{_unit_hint(value, now_ms, limits)}",
        )
    return ts


def _iso_timestamp(value: str) -> int:
    path = "$.timestamp"
    if _ISO_RE.fullmatch(value) is None:
        if _ZONELESS_RE.fullmatch(value) is not None:
            raise EventError(
                "bad_timestamp",
                path,
                f"timestamp {_show(value)} has no zone; add one (Z or +02:00), "
                "e.g. 2024-05-01T12:00:00Z",
            )
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {_show(value)} is not ISO-8601; expected e.g. 2024-05-01T12:00:00Z, "
            "2024-05-01T14:00:00.250+02:00, or epoch milliseconds",
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise EventError(
            "bad_timestamp", path, f"timestamp {_show(value)} is not a real time: {exc}"
        ) from None
    ts = (parsed - _EPOCH) // _ONE_MS
    if ts < MIN_TIMESTAMP_MS:
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {_show(value)} is before 1973-03-03T09:46:40Z, the earliest accepted",
        )
    return ts


def _duration(ms: int) -> str:
    if ms >= 2 * 86_400_000:
        return f"{ms // 86_400_000:,} days"
    seconds, millis = divmod(ms, 1000)
    return f"{seconds} s" if millis == 0 else f"{seconds}.{millis:03d} s"


def _unit_hint(value: Any, now_ms: int, limits: Limits) -> str:
    if type(value) is not int:
        return ""
    for unit, divisor in (("microseconds", 1000), ("nanoseconds", 1_000_000)):
        if abs(value // divisor - now_ms) <= max(limits.max_future_skew_ms, 86_400_000):
            return f"; {value} looks like epoch {unit}: send milliseconds"
    return "; check the producer's clock"


# -- field kinds ------------------------------------------------------------

Check = Callable[[Any, str, str, Limits], None]
"""Validate ``value``, found at ``parent``.``name``; raise :class:`EventError`."""


def _check_id(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    if not value:
        raise EventError("empty_id", _path(parent, name), f"{name} must not be empty")
    if len(value) > limits.max_id_length:
        raise EventError(
            "id_too_long",
            _path(parent, name),
            f"{name} is {len(value)} characters; the limit is {limits.max_id_length}",
        )
    if not value.isprintable() and _CONTROL_RE.search(value) is not None:
        raise EventError(
            "control_character",
            _path(parent, name),
            f"{name} contains control characters (U+0000–U+001F, U+007F–U+009F): {_show(value)}",
        )


def _check_text(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)


def _check_boolean(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not bool:
        raise _wrong_type(parent, name, "true or false", value)


def _check_amount(value: Any, parent: str, name: str, limits: Limits) -> None:
    kind = type(value)
    if kind is not float and kind is not int:
        raise _wrong_type(parent, name, "a number", value)
    if not 0 <= value <= limits.max_amount:
        if value < 0:
            problem = "must not be negative"
        elif value > limits.max_amount:
            problem = f"is larger than {limits.max_amount:,.0f}, the most accepted"
        else:
            problem = "must be a finite number"
        raise EventError("bad_amount", _path(parent, name), f"{name} {value!r} {problem}")


def _check_quantity(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not int:
        expected = "an integer without a decimal point or exponent"
        raise _wrong_type(parent, name, expected, value)
    if not 1 <= value <= limits.max_quantity:
        raise EventError(
            "bad_quantity",
            _path(parent, name),
            f"{name} is {value}; it must be between 1 and {limits.max_quantity}",
        )


def _check_currency(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    if _CURRENCY_RE.fullmatch(value) is None:
        hint = f"; did you mean {value.upper()!r}?" if _CURRENCY_RE.fullmatch(value.upper()) else ""
        raise EventError(
            "bad_currency",
            _path(parent, name),
            f"{name} {_show(value)} is not an ISO 4217 code (three upper-case letters such "
            f"as EUR or USD){hint}",
        )


def _check_timezone(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    if not _is_timezone(value):
        raise EventError(
            "bad_timezone",
            _path(parent, name),
            f"{name} {_show(value)} is not an IANA time-zone name such as Europe/Paris or "
            "America/New_York (an offset such as +02:00 is not a zone name)",
        )


@lru_cache(maxsize=1024)
def _is_timezone(name: str) -> bool:
    if len(name) > MAX_TIMEZONE_LENGTH or _TIMEZONE_RE.fullmatch(name) is None:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, LookupError, OSError):
        return False
    return True


def _check_locale(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    if len(value) > MAX_LOCALE_LENGTH or _LOCALE_RE.fullmatch(value) is None:
        raise EventError(
            "bad_format",
            _path(parent, name),
            f"{name} {_show(value)} is not a BCP 47 language tag such as en, en-US or zh-Hans-CN",
        )


def _check_ip(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise EventError(
            "bad_format",
            _path(parent, name),
            f"{name} {_show(value)} is not an IPv4 or IPv6 address",
        ) from None


_KIND_CHECKS: Final[Mapping[str, Check]] = {
    "id": _check_id,
    "text": _check_text,
    "amount": _check_amount,
    "quantity": _check_quantity,
    "currency": _check_currency,
    "timezone": _check_timezone,
    "locale": _check_locale,
    "ip": _check_ip,
    "boolean": _check_boolean,
}


# -- compiled shapes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rules:
    """A shape (or an event type's properties) compiled for the hot path."""

    fields: tuple[tuple[str, Check, bool], ...]
    names: frozenset[str]
    closed: bool = False
    min_fields: int = 0
    identity: Identity = "either"
    #: True when ``doc`` certainly passes these rules (:func:`_compile_passes`);
    #: False sends it through :func:`_check_shape`, which names the problem
    passes: Callable[[dict[str, Any], Limits], bool] = lambda doc, limits: False


def _compile(fields: tuple[Field, ...], *, closed: bool = False, min_fields: int = 0) -> _Rules:
    names = frozenset(f.name for f in fields)
    return _Rules(
        fields=tuple((f.name, _field_check(f), f.required) for f in fields),
        names=names,
        closed=closed,
        min_fields=min_fields,
        passes=_compile_passes(fields, names, closed, min_fields),
    )


#: the condition under which a value of each kind passes its check (``v``:
#: the value, ``limits``); each implies the check passes (the hot path's test)
_PASSES: Final[Mapping[str, str]] = {
    "id": "type(v) is str and v and len(v) <= limits.max_id_length and v.isprintable()",
    "text": "type(v) is str",
    "boolean": "type(v) is bool",
    "amount": "(type(v) is float or type(v) is int) and 0 <= v <= limits.max_amount",
    "quantity": "type(v) is int and 1 <= v <= limits.max_quantity",
    "currency": "type(v) is str and (v in _currencies or _currency(v))",
    "timezone": "type(v) is str and _is_timezone(v)",
    "locale": f"type(v) is str and len(v) <= {MAX_LOCALE_LENGTH} and (v in _locales or _locale(v))",
    "ip": "False",  # rare: always through the full check
}


def _remembering(pattern: re.Pattern[str], known: set[str]) -> Callable[[str], bool]:
    """``pattern.fullmatch(v) is not None``, remembering the values that match
    (a few hundred distinct codes and tags: a set lookup instead of a match)."""

    def matches(value: str) -> bool:
        if pattern.fullmatch(value) is None:
            return False
        if len(known) < 4096:
            known.add(value)
        return True

    return matches


_CURRENCIES: Final[set[str]] = set()
_LOCALES: Final[set[str]] = set()


def _compile_passes(
    fields: tuple[Field, ...], names: frozenset[str], closed: bool, min_fields: int
) -> Callable[[dict[str, Any], Limits], bool]:
    """One function with every field's test inline (no call per field):
    True only when the full check (:func:`_check_shape`) would pass too.
    A shape without required fields is tested member by member (a context
    has 2 or 3 of its 6 fields), any other field by field."""
    scope: dict[str, Any] = {
        "_currency": _remembering(_CURRENCY_RE, _CURRENCIES),
        "_currencies": _CURRENCIES,
        "_locale": _remembering(_LOCALE_RE, _LOCALES),
        "_locales": _LOCALES,
        "_is_timezone": _is_timezone,
        "_names": names,
    }
    tests: list[tuple[Field, list[str]]] = []
    for i, spec in enumerate(fields):
        if spec.kind in ("object", "list"):
            assert spec.shape is not None, spec.name
            shape = spec.shape
            scope[f"_inner{i}"] = _compile_passes(
                shape.fields,
                frozenset(f.name for f in shape.fields),
                shape.closed,
                shape.min_fields,
            )
            if spec.kind == "object":
                test = [f"if type(v) is not dict or not _inner{i}(v, limits):", "    return False"]
            else:
                test = [
                    "if type(v) is not list:",
                    "    return False",
                    "for item in v:",
                    f"    if type(item) is not dict or not _inner{i}(item, limits):",
                    "        return False",
                ]
        else:
            test = [f"if not ({_PASSES[spec.kind]}):", "    return False"]
        tests.append((spec, test))
    lines = ["def passes(doc, limits):"]
    if any(spec.required for spec in fields):
        lines.append("    get = doc.get")
        for spec, test in tests:
            lines.append(f"    v = get({spec.name!r})")
            lines.append("    if v is None:")
            lines.append("        return False" if spec.required else "        pass")
            lines.append("    else:")
            lines += [f"        {line}" for line in test]
        if closed:
            lines += ["    if not _names.issuperset(doc):", "        return False"]
    elif tests:
        lines.append("    for k, v in doc.items():")
        for n, (spec, test) in enumerate(tests):
            lines.append(f"        {'if' if n == 0 else 'elif'} k == {spec.name!r}:")
            lines.append("            if v is not None:")
            lines += [f"                {line}" for line in test]
        if closed:
            lines += ["        else:", "            return False"]
    elif closed:
        lines += ["    if doc:", "        return False"]
    if min_fields:
        lines += [f"    if len(doc) < {min_fields}:", "        return False"]
    lines.append("    return True")
    exec("\n".join(lines), scope)
    passes: Callable[[dict[str, Any], Limits], bool] = scope["passes"]
    return passes


def _field_check(spec: Field) -> Check:
    if spec.kind == "object":
        assert spec.shape is not None, spec.name
        return _object_check(_compile_shape(spec.shape))
    if spec.kind == "list":
        assert spec.shape is not None, spec.name
        return _list_check(_compile_shape(spec.shape))
    return _KIND_CHECKS[spec.kind]


def _compile_shape(shape: Shape) -> _Rules:
    return _compile(shape.fields, closed=shape.closed, min_fields=shape.min_fields)


def _object_check(rules: _Rules) -> Check:
    def check(value: Any, parent: str, name: str, limits: Limits) -> None:
        if type(value) is not dict:
            raise _wrong_type(parent, name, "an object", value)
        _check_shape(value, f"{parent}.{name}", rules, limits)

    return check


def _list_check(rules: _Rules) -> Check:
    def check(value: Any, parent: str, name: str, limits: Limits) -> None:
        if type(value) is not list:
            raise _wrong_type(parent, name, "an array", value)
        base = f"{parent}.{name}"
        for index, item in enumerate(value):
            if type(item) is not dict:
                raise _wrong_type(base, f"[{index}]", "an object", item)
            _check_shape(item, f"{base}[{index}]", rules, limits)

    return check


def _check_shape(doc: dict[str, Any], parent: str, rules: _Rules, limits: Limits) -> None:
    get = doc.get
    for name, check, required in rules.fields:
        value = get(name)
        if value is None:
            if required:
                raise EventError("missing_field", _path(parent, name), f"{name} is required")
            continue
        check(value, parent, name, limits)
    if rules.closed and not rules.names.issuperset(doc):
        extra = next(key for key in doc if key not in rules.names)
        raise EventError(
            "unknown_field",
            _path(parent, extra),
            f"unknown field {_show(extra)}; expected one of {', '.join(sorted(rules.names))}",
        )
    if len(doc) < rules.min_fields:
        raise EventError(
            "missing_field",
            parent,
            f"{parent} must have at least {rules.min_fields} of: {', '.join(sorted(rules.names))}",
        )


def _type_rules(spec: EventType) -> _Rules:
    rules = _compile(spec.properties)
    return _Rules(rules.fields, rules.names, identity=spec.identity, passes=rules.passes)


_TYPE_RULES: Final[Mapping[str, _Rules]] = {
    name: _type_rules(spec) for name, spec in EVENT_TYPES.items()
}
_CONTEXT_RULES: Final = _compile_shape(CONTEXT)


# -- messages ---------------------------------------------------------------

_SIMPLE_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PATH_NAME: Final = 64


def _path(parent: str, name: str) -> str:
    """The JSON path of member ``name`` of ``parent`` (``[i]`` for an index);
    an absurdly long member name is cut short, like every echoed value."""
    if name.startswith("["):
        return f"{parent}{name}"
    if _SIMPLE_NAME_RE.fullmatch(name) and len(name) <= _MAX_PATH_NAME:
        return f"{parent}.{name}"
    if len(name) > _MAX_PATH_NAME:
        name = name[: _MAX_PATH_NAME - 1] + "…"
    return f"{parent}[{json.dumps(name, ensure_ascii=False)}]"


def _wrong_type(parent: str, name: str, expected: str, value: Any) -> EventError:
    got = _kind(value)
    if type(value) is bool or value is None:
        shown = f" ({'null' if value is None else str(value).lower()})"
    elif isinstance(value, (int, float, str)):
        shown = f" ({_show(value)})"
    else:
        shown = ""
    label = name.lstrip("[").rstrip("]") if name.startswith("[") else name
    subject = f"element {label}" if name.startswith("[") else name
    return EventError(
        "wrong_type", _path(parent, name), f"{subject} must be {expected}, got {got}{shown}"
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number" if value.is_integer() else "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    sys.stdout.write(render_json_schema())
