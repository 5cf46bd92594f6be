"""The event contract itself: what a record on ``user-events`` may say,
declared once as data.

- :data:`EVENT_TYPES` — every known event type, who it must name
  (``user_id``, ``anonymous_id`` or both) and its properties with their kinds;
- :data:`CONTEXT` — the known ``context`` fields (and the :data:`CAMPAIGN`,
  :data:`LINE_ITEM` and :data:`CONSENT_CHANNELS` shapes they nest);
- :data:`REJECTION_CODES` — every ``EventError.code`` a record can get;
- :class:`Limits` and the fixed bounds and patterns of ids, types, timestamps,
  currencies, locales and time zones.

:mod:`streams.events` parses records against these tables
(:func:`~streams.events.parse_event`) and :mod:`streams.schema` renders them
as JSON Schema, so the two cannot disagree. docs/events.md is the contract a
producer reads. This module holds no logic and imports neither of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

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
    #: the deepest nesting of objects and arrays a record may have (the record
    #: itself is level 1): far below what every re-encoding of an event writes
    #: (orjson: 254 levels; a forwarded event is one level deeper than its record)
    max_depth: int = 64


DEFAULT_LIMITS = Limits()

#: Longest accepted event type name.
MAX_TYPE_LENGTH: Final = 64
#: Earliest accepted event time, 1973-03-03T09:46:40Z. Every number below it
#: is far likelier epoch *seconds* sent by mistake than a real 1970s event.
MIN_TIMESTAMP_MS: Final = 100_000_000_000
#: Longest accepted time-zone name and locale tag.
MAX_TIMEZONE_LENGTH: Final = 64
MAX_LOCALE_LENGTH: Final = 35

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

# ---------------------------------------------------------------------------
# Rejection codes

#: Every ``EventError.code`` of the contract and what it means. All but
#: ``key_mismatch`` come from :func:`~streams.events.parse_event`;
#: ``key_mismatch`` is raised by the pipeline when the Kafka record key is not
#: :attr:`~streams.events.Event.key`.
REJECTION_CODES: Final[Mapping[str, str]] = {
    "too_large": "the record is bigger than the configured limit",
    "too_deep": "objects and arrays are nested deeper than the limit",
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
