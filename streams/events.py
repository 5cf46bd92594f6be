"""The input contract: bytes from ``user-events`` → a typed :class:`Event`,
or an :class:`~streams.errors.EventError` that says exactly what is wrong.

The contract is data, declared once in this module:

- :data:`EVENT_TYPES` — every known event type, who it must name
  (``user_id``, ``anonymous_id`` or both) and its properties with their kinds;
- :data:`CONTEXT` — the known ``context`` fields;
- :data:`REJECTION_CODES` — every ``EventError.code`` a record can get.

:func:`parse_event` validates a record against those tables and
:func:`json_schema` renders the same tables as JSON Schema (draft 2020-12),
committed at ``streams/schemas/user-event.schema.json`` for producers in other
languages (regenerate with ``python -m streams.events``). docs/events.md is the
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

import orjson

from streams.errors import EventError

# ---------------------------------------------------------------------------
# Limits and fixed bounds


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what the pipeline accepts; set from the worker's settings
    (``USERPULSE_MAX_EVENT_BYTES``, ``USERPULSE_MAX_FUTURE_SKEW_S``)."""

    max_bytes: int = 64 * 1024
    max_future_skew_ms: int = 10 * 60 * 1000
    max_id_length: int = 256
    max_amount: float = 1_000_000_000_000
    max_quantity: int = 1_000_000


DEFAULT_LIMITS = Limits()

#: Longest accepted event type name.
MAX_TYPE_LENGTH: Final = 64
#: Earliest accepted event time, 1973-03-03T09:46:40Z. Every number below it
#: is far likelier epoch *seconds* sent by mistake than a real 1970s event.
MIN_TIMESTAMP_MS: Final = 100_000_000_000
_MAX_TIMEZONE_LENGTH: Final = 64
_MAX_LOCALE_LENGTH: Final = 35

# Patterns shared by the parser (``re.fullmatch``) and the JSON Schema
# (ECMA-262), so they are written in the subset both understand.
TYPE_PATTERN: Final = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
ID_PATTERN: Final = r"^[^\u0000-\u001f\u007f-\u009f]*$"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
LOCALE_PATTERN: Final = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$"
TIMEZONE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
ISO_TIMESTAMP_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
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
# Rejection codes

#: Every ``EventError.code`` of the contract and what it means. All but
#: ``key_mismatch`` come from :func:`parse_event`; ``key_mismatch`` is raised
#: by the pipeline when the Kafka record key is not :attr:`Event.key`.
REJECTION_CODES: Final[Mapping[str, str]] = {
    "too_large": "the record is bigger than the configured limit",
    "invalid_utf8": "the record is not valid UTF-8",
    "not_json": "the record is not a JSON document",
    "not_object": "the JSON document is not an object",
    "unknown_field": "a field that the contract does not define",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong JSON type",
    "empty_id": "an identifier is the empty string",
    "id_too_long": "an identifier is longer than the limit",
    "control_character": "an identifier contains a control character",
    "bad_type": "the event type is not a snake_case name of at most 64 characters",
    "bad_timestamp": "the timestamp cannot be read as an event time",
    "future_timestamp": "the timestamp is further in the future than the allowed skew",
    "bad_amount": "a money amount is negative, not finite or implausibly large",
    "bad_quantity": "a quantity is not between 1 and the limit",
    "bad_currency": "a currency is not a three-letter upper-case ISO 4217 code",
    "bad_timezone": "a time zone is not an IANA time-zone name",
    "bad_format": "a string does not follow its standard format (locale, IP address)",
    "key_mismatch": "the Kafka record key is not the event's user_id (or anonymous_id)",
}

# ---------------------------------------------------------------------------
# The declarative contract

Kind = Literal[
    "id",
    "text",
    "amount",
    "quantity",
    "currency",
    "timezone",
    "locale",
    "ip",
    "boolean",
    "object",
    "list",
]
Identity = Literal["either", "user", "both"]


@dataclass(frozen=True, slots=True)
class Field:
    """One named field of an object: its kind, whether it is required, and —
    for ``object`` and ``list`` kinds — the shape of the object (or of each
    list element). An optional field that is ``null`` counts as absent."""

    name: str
    kind: Kind
    required: bool = False
    doc: str = ""
    shape: Shape | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """The fields of a JSON object. ``closed`` rejects fields not listed;
    an open shape (the default) carries extra fields through untouched."""

    name: str
    fields: tuple[Field, ...] = ()
    doc: str = ""
    closed: bool = False
    min_fields: int = 0


@dataclass(frozen=True, slots=True)
class EventType:
    """A known event type: its properties, which ids it must carry, and an
    example ``properties`` object (used by the docs, the schema and tests)."""

    name: str
    doc: str
    properties: tuple[Field, ...] = ()
    identity: Identity = "either"
    example: Mapping[str, Any] = field(default_factory=dict)


LINE_ITEM: Final = Shape(
    "line_item",
    (
        Field("product_id", "id", True, "the product (SKU) id"),
        Field("quantity", "quantity", True, "units of the product"),
        Field("price", "amount", True, "unit price, in the event's currency"),
    ),
    doc="One product line of a cart, checkout, order or refund.",
)

CAMPAIGN: Final = Shape(
    "campaign",
    (
        Field("source", "id", doc="utm_source, e.g. newsletter, google"),
        Field("medium", "id", doc="utm_medium, e.g. email, cpc"),
        Field("name", "id", doc="utm_campaign, e.g. spring_sale"),
        Field("term", "id", doc="utm_term"),
        Field("content", "id", doc="utm_content"),
    ),
    doc="The marketing campaign that brought the user (UTM parameters).",
)

CONSENT_CHANNELS: Final = Shape(
    "consent_channels",
    tuple(
        Field(channel, "boolean", doc=f"true when the user agrees to {channel} messages")
        for channel in ("email", "sms", "push", "in_app")
    ),
    doc="Channels whose consent changed: channel name → granted. At least one.",
    closed=True,
    min_fields=1,
)

CONTEXT: Final = Shape(
    "context",
    (
        Field(
            "channel", "id", doc="acquisition or touch channel, e.g. web, ios, email, paid_search"
        ),
        Field("campaign", "object", doc="UTM campaign", shape=CAMPAIGN),
        Field("locale", "locale", doc="BCP 47 language tag, e.g. en-US"),
        Field("timezone", "timezone", doc="IANA time-zone name, e.g. Europe/Paris"),
        Field("ip", "ip", doc="client IPv4 or IPv6 address"),
        Field("user_agent", "text", doc="client User-Agent string"),
    ),
    doc="Where the event happened. Fields not listed here are carried through unchecked.",
)

_PRODUCTS = Field("products", "list", doc="the product lines", shape=LINE_ITEM)
_CURRENCY = Field("currency", "currency", doc="ISO 4217 code of the amounts, e.g. EUR")

#: Every known event type, by name. Types not listed here are accepted as
#: generic activity with any ``properties`` object.
EVENT_TYPES: Final[Mapping[str, EventType]] = {
    spec.name: spec
    for spec in (
        EventType(
            "signed_up",
            "The user created an account. Carry the anonymous_id to merge the pre-sign-up history.",
            (
                Field("referrer_id", "id", doc="user_id of the user who referred them"),
                Field("method", "text", doc="how they signed up, e.g. email, google"),
            ),
            identity="user",
            example={"method": "email", "referrer_id": "u-1001"},
        ),
        EventType(
            "session_started",
            "A new app or site session began.",
            (Field("session_id", "id", doc="the session's id"),),
            example={"session_id": "s-8f2c"},
        ),
        EventType(
            "page_viewed",
            "A page or screen was viewed.",
            (
                Field("url", "text", doc="full URL"),
                Field("path", "text", doc="path part of the URL"),
                Field("title", "text", doc="page title"),
                Field("referrer", "text", doc="referring URL"),
            ),
            example={"url": "https://shop.example/sale", "path": "/sale", "title": "Sale"},
        ),
        EventType(
            "product_viewed",
            "A product detail was viewed.",
            (
                Field("product_id", "id", True, "the product (SKU) id"),
                Field("price", "amount", doc="unit price"),
                _CURRENCY,
            ),
            example={"product_id": "sku-42", "price": 19.9, "currency": "EUR"},
        ),
        EventType(
            "product_added",
            "Units of a product were added to a cart.",
            (
                Field("product_id", "id", True, "the product (SKU) id"),
                Field("quantity", "quantity", True, "units added"),
                Field("price", "amount", True, "unit price"),
                Field("cart_id", "id", True, "the cart's id"),
                _CURRENCY,
            ),
            example={
                "product_id": "sku-42",
                "quantity": 2,
                "price": 19.9,
                "cart_id": "c-7",
                "currency": "EUR",
            },
        ),
        EventType(
            "product_removed",
            "Units of a product were removed from a cart.",
            (
                Field("product_id", "id", True, "the product (SKU) id"),
                Field("quantity", "quantity", True, "units removed"),
                Field("price", "amount", True, "unit price"),
                Field("cart_id", "id", True, "the cart's id"),
                _CURRENCY,
            ),
            example={"product_id": "sku-42", "quantity": 1, "price": 19.9, "cart_id": "c-7"},
        ),
        EventType(
            "checkout_started",
            "The user began checking out a cart.",
            (
                Field("cart_id", "id", True, "the cart's id"),
                Field("value", "amount", doc="cart value"),
                _CURRENCY,
                _PRODUCTS,
            ),
            example={"cart_id": "c-7", "value": 39.8, "currency": "EUR"},
        ),
        EventType(
            "order_completed",
            "An order was paid.",
            (
                Field("order_id", "id", True, "the order's id"),
                Field("revenue", "amount", True, "order revenue"),
                Field("currency", "currency", True, "ISO 4217 code, e.g. EUR"),
                Field("products", "list", True, "the product lines", shape=LINE_ITEM),
                Field("cart_id", "id", doc="the cart that became this order"),
                Field("discount", "amount", doc="discount granted"),
                Field("shipping", "amount", doc="shipping cost"),
                Field("tax", "amount", doc="tax"),
                Field("coupon", "text", doc="coupon code used"),
            ),
            example={
                "order_id": "o-1234",
                "revenue": 39.8,
                "currency": "EUR",
                "products": [{"product_id": "sku-42", "quantity": 2, "price": 19.9}],
                "cart_id": "c-7",
            },
        ),
        EventType(
            "order_refunded",
            "Money of an order was given back (all or part of it).",
            (
                Field("order_id", "id", True, "the refunded order's id"),
                Field("amount", "amount", True, "refunded amount"),
                Field("currency", "currency", True, "ISO 4217 code, e.g. EUR"),
                _PRODUCTS,
            ),
            example={"order_id": "o-1234", "amount": 19.9, "currency": "EUR"},
        ),
        EventType(
            "user_identified",
            "An anonymous visitor became a known user: merges anonymous_id into user_id.",
            identity="both",
        ),
        EventType(
            "referral_converted",
            "Someone the user referred converted. Sent for the referrer (user_id).",
            (
                Field("referrer_id", "id", True, "the referring user's id"),
                Field("referred_user_id", "id", True, "the referred user's id"),
            ),
            identity="user",
            example={"referrer_id": "u-1001", "referred_user_id": "u-2002"},
        ),
        EventType(
            "consent_updated",
            "The user granted or withdrew consent for message channels.",
            (Field("channels", "object", True, shape=CONSENT_CHANNELS),),
            example={"channels": {"email": True, "sms": False}},
        ),
        EventType(
            "user_deleted",
            "The user asked for erasure: userpulse forgets them.",
        ),
    )
}

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

    event_id = doc.get("event_id")
    if event_id is None:
        raise EventError("missing_field", "$.event_id", "event_id is required: a unique id")
    _check_id(event_id, "$", "event_id", limits)

    etype = doc.get("type")
    if etype is None:
        raise EventError("missing_field", "$.type", "type is required, e.g. product_viewed")
    spec = _TYPE_RULES.get(etype) if type(etype) is str else None
    if spec is None:
        _check_type_name(etype)

    user_id = doc.get("user_id")
    if user_id is not None:
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

    timestamp_ms = _timestamp(doc.get("timestamp"), now_ms, limits)

    properties = doc.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        raise _wrong_type("$", "properties", "an object", properties)
    if spec is not None and spec.fields:
        _check_shape(properties, "$.properties", spec, limits)

    context = doc.get("context")
    if context is None:
        context = {}
    elif type(context) is not dict:
        raise _wrong_type("$", "context", "an object", context)
    elif context:
        _check_shape(context, "$.context", _CONTEXT_RULES, limits)

    return Event(event_id, etype, timestamp_ms, user_id, anonymous_id, properties, context)


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
    if len(name) > _MAX_TIMEZONE_LENGTH or _TIMEZONE_RE.fullmatch(name) is None:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, LookupError, OSError):
        return False
    return True


def _check_locale(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise _wrong_type(parent, name, "a string", value)
    if len(value) > _MAX_LOCALE_LENGTH or _LOCALE_RE.fullmatch(value) is None:
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


def _compile(fields: tuple[Field, ...], *, closed: bool = False, min_fields: int = 0) -> _Rules:
    return _Rules(
        fields=tuple((f.name, _field_check(f), f.required) for f in fields),
        names=frozenset(f.name for f in fields),
        closed=closed,
        min_fields=min_fields,
    )


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
    return _Rules(rules.fields, rules.names, identity=spec.identity)


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


# ---------------------------------------------------------------------------
# JSON Schema

SCHEMA_ID: Final = "urn:userpulse:schema:user-event"


def json_schema(limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The contract as a JSON Schema (draft 2020-12), built from the same tables
    as :func:`parse_event`.

    What a schema cannot say is left to the pipeline, which also checks: that a
    time zone exists, that an ISO timestamp is a real time no earlier than
    1973-03-03 and not in the future, that an IP address parses, and that
    integers are written without a decimal point (JSON Schema takes 2.0 as an
    integer).
    """
    defs: dict[str, Any] = {}
    envelope = {
        "event_id": _describe(
            _kind_schema("id", limits), "unique id of the event: the de-duplication key"
        ),
        "type": {
            "description": (
                "event type: a snake_case name; unknown types are accepted as generic activity"
            ),
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TYPE_LENGTH,
            "pattern": TYPE_PATTERN,
            "examples": list(EVENT_TYPES),
        },
        "timestamp": {
            "description": "event time: epoch milliseconds, or ISO-8601 / RFC 3339 with a zone",
            "anyOf": [
                {"type": "integer", "minimum": MIN_TIMESTAMP_MS},
                {"type": "string", "pattern": ISO_TIMESTAMP_PATTERN, "format": "date-time"},
            ],
        },
        "user_id": _nullable(
            _describe(
                _kind_schema("id", limits), "the known user's id; the record key when present"
            )
        ),
        "anonymous_id": _nullable(
            _describe(_kind_schema("id", limits), "the visitor's id before sign-up")
        ),
        "properties": {
            "description": "what happened, per type (see allOf); null means {}",
            "type": ["object", "null"],
        },
        "context": {
            "description": CONTEXT.doc + " null means {}.",
            "type": ["object", "null"],
            "$ref": _shape_ref(CONTEXT, defs, limits),
        },
    }
    per_type: list[dict[str, Any]] = []
    for spec in EVENT_TYPES.values():
        then: dict[str, Any] = {}
        required: list[str] = []
        if spec.properties:
            shape = Shape(
                f"{spec.name}_properties", spec.properties, doc=f"{spec.name}: {spec.doc}"
            )
            needs = any(f.required for f in spec.properties)
            then["properties"] = {
                "properties": {
                    "type": "object" if needs else ["object", "null"],
                    "$ref": _shape_ref(shape, defs, limits),
                }
            }
            if needs:
                required.append("properties")
        if spec.identity != "either":
            ids = ["user_id"] if spec.identity == "user" else ["user_id", "anonymous_id"]
            required.extend(ids)
            then.setdefault("properties", {}).update({name: {"type": "string"} for name in ids})
        if required:
            then["required"] = required
        if then:
            per_type.append(
                {
                    "if": {"properties": {"type": {"const": spec.name}}, "required": ["type"]},
                    "then": then,
                }
            )
    example = {
        "event_id": "0b7e6c1e-5f1a-4c8e-9d43-2f1d7c9a1b22",
        "type": "product_added",
        "user_id": "u-1001",
        "timestamp": "2024-05-01T12:00:00.250Z",
        "properties": dict(EVENT_TYPES["product_added"].example),
        "context": {"channel": "web", "locale": "en-US", "timezone": "Europe/Paris"},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "userpulse user event",
        "description": (
            "One record of the user-events topic (JSON, UTF-8, key = user_id or else "
            "anonymous_id). See docs/events.md."
        ),
        "type": "object",
        "properties": envelope,
        "required": ["event_id", "type", "timestamp"],
        "additionalProperties": False,
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("user_id", "anonymous_id")
        ],
        "allOf": per_type,
        "examples": [example],
        "$defs": defs,
    }


def render_json_schema(limits: Limits = DEFAULT_LIMITS) -> str:
    """:func:`json_schema` as the text committed in streams/schemas/."""
    return json.dumps(json_schema(limits), indent=2, ensure_ascii=False) + "\n"


def _kind_schema(kind: Kind, limits: Limits) -> dict[str, Any]:
    if kind == "id":
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.max_id_length,
            "pattern": ID_PATTERN,
        }
    if kind == "text":
        return {"type": "string"}
    if kind == "amount":
        return {"type": "number", "minimum": 0, "maximum": limits.max_amount}
    if kind == "quantity":
        return {"type": "integer", "minimum": 1, "maximum": limits.max_quantity}
    if kind == "currency":
        return {"type": "string", "pattern": CURRENCY_PATTERN}
    if kind == "timezone":
        return {"type": "string", "maxLength": _MAX_TIMEZONE_LENGTH, "pattern": TIMEZONE_PATTERN}
    if kind == "locale":
        return {"type": "string", "maxLength": _MAX_LOCALE_LENGTH, "pattern": LOCALE_PATTERN}
    if kind == "ip":
        return {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
    if kind == "boolean":
        return {"type": "boolean"}
    raise ValueError(f"kind {kind!r} has no scalar schema")


def _field_schema(spec: Field, defs: dict[str, Any], limits: Limits) -> dict[str, Any]:
    if spec.kind == "object":
        assert spec.shape is not None
        schema: dict[str, Any] = {"type": "object", "$ref": _shape_ref(spec.shape, defs, limits)}
    elif spec.kind == "list":
        assert spec.shape is not None
        item = {"type": "object", "$ref": _shape_ref(spec.shape, defs, limits)}
        schema = {"type": "array", "items": item}
    else:
        schema = _kind_schema(spec.kind, limits)
    if spec.doc:
        schema = _describe(schema, spec.doc)
    return schema if spec.required else _nullable(schema)


def _shape_ref(shape: Shape, defs: dict[str, Any], limits: Limits) -> str:
    """Add ``shape`` to ``defs`` (without a ``type``: the referring site says
    whether null is allowed) and return its reference."""
    if shape.name not in defs:
        body: dict[str, Any] = {}
        if shape.doc:
            body["description"] = shape.doc
        defs[shape.name] = body
        body["properties"] = {f.name: _field_schema(f, defs, limits) for f in shape.fields}
        required = [f.name for f in shape.fields if f.required]
        if required:
            body["required"] = required
        if shape.closed:
            body["additionalProperties"] = False
        if shape.min_fields:
            body["minProperties"] = shape.min_fields
    return f"#/$defs/{shape.name}"


def _describe(schema: dict[str, Any], doc: str) -> dict[str, Any]:
    return {"description": doc, **schema}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


if __name__ == "__main__":
    sys.stdout.write(render_json_schema())
