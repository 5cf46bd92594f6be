"""The event contract (streams/events.py): what a producer may send, and the
exact code and JSON path of every rejection it gets back in the dead-letter
headers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

import streams.events
from streams.contract import (
    CONTEXT,
    DEFAULT_LIMITS,
    EVENT_TYPES,
    MIN_TIMESTAMP_MS,
    REJECTION_CODES,
    Limits,
)
from streams.errors import EventError
from streams.events import Event, encode_event, parse_event
from streams.schema import json_schema, render_json_schema

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SKEW = DEFAULT_LIMITS.max_future_skew_ms
REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = Path(streams.events.__file__).parent / "schemas" / "user-event.schema.json"
DOCS_FILE = REPO / "docs" / "events.md"

#: Codes that agents/worker/pipeline.py and agents/kafka/producer.py already rely on.
LEGACY_CODES = {
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "empty_id",
    "id_too_long",
    "control_character",
    "bad_timestamp",
    "future_timestamp",
}


def envelope(event_type: str = "product_viewed", **fields: Any) -> dict[str, Any]:
    """A valid event of ``event_type`` (its documented example), with ``fields`` replaced."""
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "type": event_type,
        "user_id": "u-1",
        "timestamp": NOW - 1_000,
    }
    spec = EVENT_TYPES.get(event_type)
    if spec is not None:
        doc["properties"] = json.loads(json.dumps(spec.example))  # a deep copy
        if spec.identity == "both":
            doc["anonymous_id"] = "anon-1"
    doc.update(fields)
    return doc


def props(event_type: str, **changes: Any) -> dict[str, Any]:
    """``event_type``'s example properties with ``changes`` (``None`` deletes a key)."""
    out = dict(EVENT_TYPES[event_type].example)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def raw_of(doc: dict[str, Any] | bytes) -> bytes:
    return doc if isinstance(doc, bytes) else orjson.dumps(doc)


def parse(doc: dict[str, Any] | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Event:
    return parse_event(raw_of(doc), now_ms=NOW, limits=limits)


def rejection(doc: dict[str, Any] | bytes, *, limits: Limits = DEFAULT_LIMITS) -> EventError:
    with pytest.raises(EventError) as caught:
        parse(doc, limits=limits)
    return caught.value


# ---------------------------------------------------------------------------
# Valid events


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_known_type_accepts_its_documented_example(event_type: str) -> None:
    doc = envelope(event_type, context={"channel": "web", "timezone": "Europe/Paris"})
    event = parse(doc)
    assert event.type == event_type
    assert event.event_id == "e-1"
    assert event.user_id == "u-1"
    assert event.timestamp_ms == NOW - 1_000
    assert event.properties == EVENT_TYPES[event_type].example
    assert event.context == {"channel": "web", "timezone": "Europe/Paris"}


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_known_type_round_trips_through_encode_event(event_type: str) -> None:
    event = parse(envelope(event_type))
    assert parse(encode_event(event)) == event


def test_unknown_snake_case_types_are_accepted_as_generic_activity() -> None:
    doc = envelope(
        "wishlist_shared",
        properties={"anything": [1, {"goes": None}], "price": "not checked here"},
    )
    event = parse(doc)
    assert event.type == "wishlist_shared"
    assert event.properties == {"anything": [1, {"goes": None}], "price": "not checked here"}


def test_an_anonymous_visitor_needs_no_user_id_and_is_keyed_by_anonymous_id() -> None:
    doc = envelope("page_viewed", anonymous_id="anon-9")
    del doc["user_id"]
    event = parse(doc)
    assert event.user_id is None
    assert event.key == "anon-9"


def test_both_ids_may_be_sent_and_the_key_is_the_user_id() -> None:
    event = parse(envelope("signed_up", anonymous_id="anon-9"))
    assert (event.user_id, event.anonymous_id, event.key) == ("u-1", "anon-9", "u-1")


def test_user_identified_carries_both_ids() -> None:
    event = parse(envelope("user_identified"))
    assert (event.user_id, event.anonymous_id) == ("u-1", "anon-1")


def test_null_means_absent_for_optional_fields() -> None:
    doc = envelope(
        "checkout_started",
        anonymous_id=None,
        properties={"cart_id": "c-7", "value": None, "currency": None, "products": None},
        context=None,
    )
    event = parse(doc)
    assert event.anonymous_id is None
    assert event.context == {}


def test_missing_properties_and_context_are_empty_objects() -> None:
    doc = envelope("user_deleted")
    doc.pop("properties", None)
    event = parse(doc)
    assert (event.properties, event.context) == ({}, {})


def test_extra_properties_and_context_fields_are_carried_through_untouched() -> None:
    extra_props = props("product_viewed", name="Mug", tags=["kitchen"], size={"h": 10})
    context = {"channel": "ios", "app": {"version": "1.2.3"}, "page": {"path": "/x"}}
    event = parse(envelope(properties=extra_props, context=context))
    assert event.properties == extra_props
    assert event.context == context


def test_a_full_context_is_accepted() -> None:
    context = {
        "channel": "email",
        "campaign": {"source": "newsletter", "medium": "email", "name": "spring_sale"},
        "locale": "zh-Hans-CN",
        "timezone": "America/Argentina/Buenos_Aires",
        "ip": "2001:db8::1",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    }
    assert parse(envelope(context=context)).context == context


@pytest.mark.parametrize("ip", ["203.0.113.7", "::1", "2001:db8::1"])
def test_ipv4_and_ipv6_addresses_are_accepted(ip: str) -> None:
    assert parse(envelope(context={"ip": ip})).context["ip"] == ip


def test_amounts_may_be_integers_or_decimals_and_zero() -> None:
    for price in (0, 0.0, 19, 19.99, DEFAULT_LIMITS.max_amount):
        assert parse(envelope(properties=props("product_viewed", price=price)))


def test_quantity_boundaries() -> None:
    for quantity in (1, DEFAULT_LIMITS.max_quantity):
        doc = envelope("product_added", properties=props("product_added", quantity=quantity))
        assert parse(doc).properties["quantity"] == quantity


def test_ids_may_use_any_printable_unicode_up_to_the_limit() -> None:
    user_id = "用户-😀 " + "x" * (DEFAULT_LIMITS.max_id_length - 5)
    assert len(user_id) == DEFAULT_LIMITS.max_id_length
    assert parse(envelope(user_id=user_id)).key == user_id


def test_an_order_may_have_an_empty_product_list() -> None:
    doc = envelope("order_completed", properties=props("order_completed", products=[]))
    assert parse(doc).properties["products"] == []


# ---------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        (NOW, NOW),
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20.250Z", NOW + 250),
        ("2023-11-14T23:13:20.001+01:00", NOW + 1),
        ("2023-11-14T16:43:20-05:30", NOW),
        ("2023-11-14 22:13:20Z", NOW),
        ("2023-11-14T22:13:20.123456789Z", NOW + 123),
        ("2023-11-14T22:13:19.9999Z", NOW - 1),
    ],
)
def test_iso_8601_with_a_zone_and_epoch_milliseconds_are_accepted(
    timestamp: int | str, expected_ms: int
) -> None:
    assert parse(envelope(timestamp=timestamp)).timestamp_ms == expected_ms


@pytest.mark.parametrize(
    "timestamp", ["2023-11-14T22:13:20", "2023-11-14T22:13:20.5", "2023-11-14 22:13", "2023-11-14"]
)
def test_zone_less_iso_timestamps_are_rejected_with_a_hint(timestamp: str) -> None:
    error = rejection(envelope(timestamp=timestamp))
    assert (error.code, error.path) == ("bad_timestamp", "$.timestamp")
    assert "has no zone" in error.message


def test_exactly_the_allowed_future_skew_is_accepted_and_one_ms_more_is_not() -> None:
    assert parse(envelope(timestamp=NOW + SKEW)).timestamp_ms == NOW + SKEW
    error = rejection(envelope(timestamp=NOW + SKEW + 1))
    assert (error.code, error.path) == ("future_timestamp", "$.timestamp")


def test_the_skew_boundary_holds_for_iso_timestamps_too() -> None:
    assert parse(envelope(timestamp="2023-11-14T22:23:20.000Z")).timestamp_ms == NOW + SKEW
    error = rejection(envelope(timestamp="2023-11-14T22:23:20.001Z"))
    assert error.code == "future_timestamp"


def test_the_future_skew_is_configurable() -> None:
    strict = Limits(max_future_skew_ms=0)
    assert parse(envelope(timestamp=NOW), limits=strict).timestamp_ms == NOW
    assert rejection(envelope(timestamp=NOW + 1), limits=strict).code == "future_timestamp"


def test_past_timestamps_are_fine_back_to_the_earliest_accepted() -> None:
    assert parse(envelope(timestamp=MIN_TIMESTAMP_MS)).timestamp_ms == MIN_TIMESTAMP_MS
    assert parse(envelope(timestamp="1973-03-03T09:46:40Z")).timestamp_ms == MIN_TIMESTAMP_MS
    assert rejection(envelope(timestamp=MIN_TIMESTAMP_MS - 1)).code == "bad_timestamp"
    assert rejection(envelope(timestamp="1973-03-03T09:46:39.999Z")).code == "bad_timestamp"


def test_epoch_seconds_are_rejected_with_the_millisecond_value_to_send() -> None:
    error = rejection(envelope(timestamp=1_700_000_000))
    assert (error.code, error.path) == ("bad_timestamp", "$.timestamp")
    assert "looks like epoch seconds" in error.message
    assert "1700000000000" in error.message


@pytest.mark.parametrize(("factor", "unit"), [(1_000, "microseconds"), (1_000_000, "nanoseconds")])
def test_epoch_micro_and_nanoseconds_are_rejected_with_a_hint(factor: int, unit: str) -> None:
    error = rejection(envelope(timestamp=NOW * factor))
    assert error.code == "future_timestamp"
    assert f"looks like epoch {unit}" in error.message


# ---------------------------------------------------------------------------
# Rejections: every code, with its path

LONG = "x" * (DEFAULT_LIMITS.max_id_length + 1)
SMALL = Limits(max_bytes=256)
SHALLOW = Limits(max_depth=32)


def _without(doc: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in names}


def _item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"product_id": "sku-1", "quantity": 1, "price": 5.0}
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def _order(*items: Any) -> dict[str, Any]:
    return envelope("order_completed", properties=props("order_completed", products=list(items)))


def _added(**changes: Any) -> dict[str, Any]:
    return envelope("product_added", properties=props("product_added", **changes))


def _refund(**changes: Any) -> dict[str, Any]:
    return envelope("order_refunded", properties=props("order_refunded", **changes))


def _consent(channels: Any) -> dict[str, Any]:
    return envelope("consent_updated", properties={"channels": channels})


REJECTIONS = [
    # size, encoding, JSON
    pytest.param(envelope(user_id="u" * 250), "too_large", "$", id="too-large"),
    pytest.param(
        envelope(properties={"x": orjson.loads(b"[" * 33 + b"]" * 33)}),  # levels 3 to 35
        "too_deep",
        "$.properties.x" + "[0]" * 30,  # level 33
        id="too-deep",
    ),
    pytest.param(b'{"event_id": "caf\xe9"}', "invalid_utf8", "$", id="latin-1"),
    pytest.param(b'{"event_id": "\xff', "invalid_utf8", "$", id="bad-utf8-and-bad-json"),
    pytest.param(b"\xef\xbb\xbf{}", "not_json", "$", id="byte-order-mark"),
    pytest.param(b"", "not_json", "$", id="empty-record"),
    pytest.param(b'{"event_id": "e-1",', "not_json", "$", id="truncated"),
    pytest.param(b'{"event_id": NaN}', "not_json", "$", id="nan-literal"),
    pytest.param(b'{"event_id": Infinity}', "not_json", "$", id="infinity-literal"),
    pytest.param(b'{"price": 1e400}', "not_json", "$", id="float-overflow"),
    pytest.param(b"[1, 2]", "not_object", "$", id="array"),
    pytest.param(b'"product_viewed"', "not_object", "$", id="string"),
    pytest.param(b"null", "not_object", "$", id="null"),
    # envelope fields
    pytest.param(envelope(userId="u-1"), "unknown_field", "$.userId", id="camel-case-field"),
    pytest.param({**envelope(), "a b": 1}, "unknown_field", '$["a b"]', id="odd-field-name"),
    pytest.param(_without(envelope(), "event_id"), "missing_field", "$.event_id", id="no-id"),
    pytest.param(envelope(event_id=None), "missing_field", "$.event_id", id="null-id"),
    pytest.param(_without(envelope(), "type"), "missing_field", "$.type", id="no-type"),
    pytest.param(_without(envelope(), "timestamp"), "missing_field", "$.timestamp", id="no-ts"),
    pytest.param(_without(envelope(), "user_id"), "missing_field", "$.user_id", id="no-user"),
    pytest.param(envelope(event_id=42), "wrong_type", "$.event_id", id="numeric-id"),
    pytest.param(envelope(user_id=["u-1"]), "wrong_type", "$.user_id", id="array-user-id"),
    pytest.param(envelope(anonymous_id=7), "wrong_type", "$.anonymous_id", id="numeric-anon"),
    pytest.param(envelope(type=5), "wrong_type", "$.type", id="numeric-type"),
    pytest.param(envelope(timestamp=True), "wrong_type", "$.timestamp", id="boolean-ts"),
    pytest.param(envelope(timestamp={"ms": 1}), "wrong_type", "$.timestamp", id="object-ts"),
    pytest.param(envelope(properties=[1]), "wrong_type", "$.properties", id="array-properties"),
    pytest.param(envelope(context="web"), "wrong_type", "$.context", id="string-context"),
    pytest.param(envelope(event_id=""), "empty_id", "$.event_id", id="empty-event-id"),
    pytest.param(envelope(user_id=""), "empty_id", "$.user_id", id="empty-user-id"),
    pytest.param(envelope(event_id=LONG), "id_too_long", "$.event_id", id="long-event-id"),
    pytest.param(envelope(anonymous_id=LONG), "id_too_long", "$.anonymous_id", id="long-anon"),
    pytest.param(envelope(event_id="e\n1"), "control_character", "$.event_id", id="newline"),
    pytest.param(envelope(user_id="u\x001"), "control_character", "$.user_id", id="nul"),
    pytest.param(envelope(user_id="u\x7f"), "control_character", "$.user_id", id="del"),
    pytest.param(envelope(user_id="u\x85"), "control_character", "$.user_id", id="c1-nel"),
    # type names
    pytest.param(envelope(type="ProductViewed"), "bad_type", "$.type", id="camel-type"),
    pytest.param(envelope(type="Product Viewed"), "bad_type", "$.type", id="segment-type"),
    pytest.param(envelope(type="product-viewed"), "bad_type", "$.type", id="kebab-type"),
    pytest.param(envelope(type=""), "bad_type", "$.type", id="empty-type"),
    pytest.param(envelope(type="_private"), "bad_type", "$.type", id="leading-underscore"),
    pytest.param(envelope(type="a__b"), "bad_type", "$.type", id="double-underscore"),
    pytest.param(envelope(type="1st_visit"), "bad_type", "$.type", id="leading-digit"),
    pytest.param(envelope(type="a" * 65), "bad_type", "$.type", id="long-type"),
    # per-type identity
    pytest.param(
        envelope("signed_up", user_id=None, anonymous_id="a"),
        "missing_field",
        "$.user_id",
        id="signed-up-anonymous",
    ),
    pytest.param(
        envelope("user_identified", anonymous_id=None),
        "missing_field",
        "$.anonymous_id",
        id="identified-without-anonymous-id",
    ),
    # timestamps
    pytest.param(envelope(timestamp=1_700_000_000), "bad_timestamp", "$.timestamp", id="secs"),
    pytest.param(envelope(timestamp=0), "bad_timestamp", "$.timestamp", id="zero-ts"),
    pytest.param(envelope(timestamp=-1), "bad_timestamp", "$.timestamp", id="negative-ts"),
    pytest.param(envelope(timestamp=1.7e12), "bad_timestamp", "$.timestamp", id="float-ts"),
    pytest.param(envelope(timestamp=NOW + 0.5), "bad_timestamp", "$.timestamp", id="frac-ts"),
    pytest.param(envelope(timestamp="yesterday"), "bad_timestamp", "$.timestamp", id="words"),
    pytest.param(
        envelope(timestamp="2023-11-14T22:13:20"), "bad_timestamp", "$.timestamp", id="no-zone"
    ),
    pytest.param(
        envelope(timestamp="20231114T221320Z"), "bad_timestamp", "$.timestamp", id="basic-format"
    ),
    pytest.param(
        envelope(timestamp="2023-02-30T00:00:00Z"), "bad_timestamp", "$.timestamp", id="feb-30"
    ),
    pytest.param(
        envelope(timestamp="2023-11-14T25:00:00Z"), "bad_timestamp", "$.timestamp", id="hour-25"
    ),
    pytest.param(
        envelope(timestamp="2023-11-14T22:13:20+24:00"),
        "bad_timestamp",
        "$.timestamp",
        id="offset-24h",
    ),
    pytest.param(
        envelope(timestamp="1970-01-01T00:00:00Z"),
        "bad_timestamp",
        "$.timestamp",
        id="iso-before-1973",
    ),
    pytest.param(
        envelope(timestamp="٢٠٢٣-11-14T22:13:20Z"),
        "bad_timestamp",
        "$.timestamp",
        id="arabic-digits",
    ),
    pytest.param(
        envelope(timestamp=NOW + SKEW + 1), "future_timestamp", "$.timestamp", id="just-over-skew"
    ),
    pytest.param(envelope(timestamp=2**64 - 1), "future_timestamp", "$.timestamp", id="u64"),
    # per-type properties
    pytest.param(
        envelope(properties={}), "missing_field", "$.properties.product_id", id="no-product"
    ),
    pytest.param(
        envelope(properties=None), "missing_field", "$.properties.product_id", id="null-props"
    ),
    pytest.param(_added(cart_id=None), "missing_field", "$.properties.cart_id", id="no-cart"),
    pytest.param(
        _order(_item(), _item(price=None)),
        "missing_field",
        "$.properties.products[1].price",
        id="line-without-price",
    ),
    pytest.param(
        envelope("referral_converted", properties={"referrer_id": "u-2"}),
        "missing_field",
        "$.properties.referred_user_id",
        id="referral-without-referred",
    ),
    pytest.param(_consent({}), "missing_field", "$.properties.channels", id="no-channels"),
    pytest.param(
        _consent({"fax": True}), "unknown_field", "$.properties.channels.fax", id="fax-channel"
    ),
    pytest.param(_added(product_id=42), "wrong_type", "$.properties.product_id", id="int-sku"),
    pytest.param(_added(price="9.99"), "wrong_type", "$.properties.price", id="string-price"),
    pytest.param(_added(price=True), "wrong_type", "$.properties.price", id="bool-price"),
    pytest.param(_added(quantity=True), "wrong_type", "$.properties.quantity", id="bool-qty"),
    pytest.param(_added(quantity=2.5), "wrong_type", "$.properties.quantity", id="frac-qty"),
    pytest.param(_added(quantity=2.0), "wrong_type", "$.properties.quantity", id="decimal-qty"),
    pytest.param(_added(quantity="2"), "wrong_type", "$.properties.quantity", id="string-qty"),
    pytest.param(_refund(amount=False), "wrong_type", "$.properties.amount", id="bool-amount"),
    pytest.param(
        envelope("order_completed", properties=props("order_completed", products={"a": 1})),
        "wrong_type",
        "$.properties.products",
        id="products-object",
    ),
    pytest.param(_order("sku-1"), "wrong_type", "$.properties.products[0]", id="line-string"),
    pytest.param(
        _order(_item(quantity=True)),
        "wrong_type",
        "$.properties.products[0].quantity",
        id="line-bool-qty",
    ),
    pytest.param(
        _consent({"email": "yes"}), "wrong_type", "$.properties.channels.email", id="consent-yes"
    ),
    pytest.param(_consent(["email"]), "wrong_type", "$.properties.channels", id="consent-list"),
    pytest.param(
        envelope("signed_up", properties={"method": 1}),
        "wrong_type",
        "$.properties.method",
        id="numeric-text",
    ),
    pytest.param(_added(cart_id=""), "empty_id", "$.properties.cart_id", id="empty-cart-id"),
    pytest.param(_added(cart_id=LONG), "id_too_long", "$.properties.cart_id", id="long-cart"),
    pytest.param(
        _added(product_id="sku\t1"),
        "control_character",
        "$.properties.product_id",
        id="tab-in-sku",
    ),
    pytest.param(_added(price=-0.01), "bad_amount", "$.properties.price", id="negative-price"),
    pytest.param(_refund(amount=-5), "bad_amount", "$.properties.amount", id="negative-refund"),
    pytest.param(
        envelope("order_completed", properties=props("order_completed", revenue=1e300)),
        "bad_amount",
        "$.properties.revenue",
        id="huge-revenue",
    ),
    pytest.param(
        envelope("order_completed", properties=props("order_completed", revenue=2**64 - 1)),
        "bad_amount",
        "$.properties.revenue",
        id="u64-revenue",
    ),
    pytest.param(
        raw_of(envelope("order_completed")).replace(
            b'"revenue":39.8', b'"revenue":123456789012345678901234567890'
        ),
        "bad_amount",
        "$.properties.revenue",
        id="beyond-u64-revenue",
    ),
    pytest.param(
        _order(_item(price=-1)), "bad_amount", "$.properties.products[0].price", id="line-neg"
    ),
    pytest.param(_added(quantity=0), "bad_quantity", "$.properties.quantity", id="zero-qty"),
    pytest.param(_added(quantity=-3), "bad_quantity", "$.properties.quantity", id="negative-qty"),
    pytest.param(
        _added(quantity=DEFAULT_LIMITS.max_quantity + 1),
        "bad_quantity",
        "$.properties.quantity",
        id="huge-qty",
    ),
    pytest.param(_refund(currency="eur"), "bad_currency", "$.properties.currency", id="eur"),
    pytest.param(_refund(currency="EURO"), "bad_currency", "$.properties.currency", id="euro"),
    pytest.param(_refund(currency="€"), "bad_currency", "$.properties.currency", id="symbol"),
    pytest.param(_refund(currency=978), "wrong_type", "$.properties.currency", id="numeric-ccy"),
    # context
    pytest.param(
        envelope(context={"channel": ""}), "empty_id", "$.context.channel", id="empty-channel"
    ),
    pytest.param(
        envelope(context={"campaign": "spring"}),
        "wrong_type",
        "$.context.campaign",
        id="string-campaign",
    ),
    pytest.param(
        envelope(context={"campaign": {"source": 1}}),
        "wrong_type",
        "$.context.campaign.source",
        id="numeric-utm-source",
    ),
    pytest.param(
        envelope(context={"campaign": {"name": "a\x00"}}),
        "control_character",
        "$.context.campaign.name",
        id="nul-in-campaign",
    ),
    pytest.param(
        envelope(context={"timezone": "Mars/Olympus_Mons"}),
        "bad_timezone",
        "$.context.timezone",
        id="unknown-zone",
    ),
    pytest.param(
        envelope(context={"timezone": "+02:00"}),
        "bad_timezone",
        "$.context.timezone",
        id="offset-zone",
    ),
    pytest.param(
        envelope(context={"timezone": "America"}),
        "bad_timezone",
        "$.context.timezone",
        id="zone-directory",
    ),
    pytest.param(
        envelope(context={"timezone": "../../etc/passwd"}),
        "bad_timezone",
        "$.context.timezone",
        id="zone-path",
    ),
    pytest.param(
        envelope(context={"timezone": 2}), "wrong_type", "$.context.timezone", id="numeric-zone"
    ),
    pytest.param(
        envelope(context={"locale": "english"}), "bad_format", "$.context.locale", id="locale"
    ),
    pytest.param(
        envelope(context={"locale": "en US"}), "bad_format", "$.context.locale", id="locale-space"
    ),
    pytest.param(envelope(context={"ip": "1.2.3"}), "bad_format", "$.context.ip", id="ip"),
    pytest.param(envelope(context={"ip": "::g"}), "bad_format", "$.context.ip", id="ipv6"),
    pytest.param(
        envelope(context={"user_agent": ["x"]}), "wrong_type", "$.context.user_agent", id="ua"
    ),
]


@pytest.mark.parametrize(("doc", "code", "path"), REJECTIONS)
def test_rejections_have_a_stable_code_and_the_path_of_the_offending_field(
    doc: dict[str, Any] | bytes, code: str, path: str
) -> None:
    limits = {"too_large": SMALL, "too_deep": SHALLOW}.get(code, DEFAULT_LIMITS)
    error = rejection(doc, limits=limits)
    assert (error.code, error.path) == (code, path), error.message
    assert error.message
    assert error.as_dict() == {"code": code, "path": path, "message": error.message}


def test_every_parser_code_is_covered_by_a_rejection_example() -> None:
    covered = {param.values[1] for param in REJECTIONS}
    assert covered == set(REJECTION_CODES) - {"key_mismatch"}


def test_the_codes_other_modules_rely_on_are_still_part_of_the_contract() -> None:
    assert set(REJECTION_CODES) >= LEGACY_CODES | {"key_mismatch"}
    assert all(re.fullmatch(r"[a-z0-9_]+", code) for code in REJECTION_CODES)


def test_the_size_limit_is_inclusive_and_configurable() -> None:
    raw = raw_of(envelope())
    assert parse(raw, limits=Limits(max_bytes=len(raw))).event_id == "e-1"
    error = rejection(raw, limits=Limits(max_bytes=len(raw) - 1))
    assert (error.code, error.path) == ("too_large", "$")
    assert f"{len(raw)} bytes" in error.message


def test_the_size_limit_is_checked_before_anything_is_decoded() -> None:
    error = rejection(b"\xff" * 300, limits=SMALL)
    assert error.code == "too_large"


def test_the_id_length_limit_is_configurable() -> None:
    error = rejection(envelope(user_id="u-123456789"), limits=Limits(max_id_length=8))
    assert (error.code, error.path) == ("id_too_long", "$.user_id")


def test_the_amount_and_quantity_ceilings_are_configurable() -> None:
    limits = Limits(max_amount=100, max_quantity=5)
    assert rejection(_added(price=100.5), limits=limits).code == "bad_amount"
    assert rejection(_added(quantity=6), limits=limits).code == "bad_quantity"
    assert parse(_added(price=100, quantity=5), limits=limits)


def test_the_first_problem_in_check_order_is_reported() -> None:
    doc = envelope(event_id="", type="Bad Type", timestamp=1, properties=[])
    assert rejection(doc).path == "$.event_id"
    assert rejection(envelope(type="Bad Type", timestamp=1)).path == "$.type"
    assert rejection(envelope(timestamp=1, properties=[])).path == "$.timestamp"


def test_unknown_types_still_get_envelope_checks() -> None:
    error = rejection(envelope("wishlist_shared", properties="x"))
    assert (error.code, error.path) == ("wrong_type", "$.properties")


# ---------------------------------------------------------------------------
# Messages a producer can act on


@pytest.mark.parametrize(
    ("doc", "hint"),
    [
        (envelope(userId="u-1"), "did you mean 'user_id'?"),
        (envelope(messageId="m"), "did you mean 'event_id'?"),
        (envelope(propertis={}), "did you mean 'properties'?"),
        (envelope(type="Product Viewed"), "did you mean 'product_viewed'?"),
        (envelope(type="orderCompleted"), "did you mean 'order_completed'?"),
        (_refund(currency="usd"), "did you mean 'USD'?"),
        (envelope(timestamp="2023-11-14T22:13:20"), "add one (Z or +02:00)"),
        (envelope(timestamp=1_700_000_000_000.5), "integer epoch milliseconds"),
        (_added(price=True), "got a boolean (true)"),
        (_added(quantity=2.0), "without a decimal point"),
        (_added(price=-1), "must not be negative"),
        (_consent({"fax": True}), "email, in_app, push, sms"),
        (b"", "record value is empty"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"a": "\xff"}', "encode JSON as UTF-8"),
    ],
)
def test_messages_say_how_to_fix_the_event(doc: dict[str, Any] | bytes, hint: str) -> None:
    assert hint in rejection(doc).message


def test_a_message_never_echoes_a_huge_value() -> None:
    error = rejection(envelope(user_id="\n" + "x" * 255))
    assert error.code == "control_character"
    assert len(error.message) < 200
    error = rejection({**envelope(), "k" * 5000: 1})
    assert error.code == "unknown_field"
    assert len(error.path) < 80
    assert len(error.message) < 300


# ---------------------------------------------------------------------------
# The published JSON Schema and the docs never drift from the code


def test_the_committed_json_schema_is_generated_from_the_contract_tables() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == render_json_schema(), (
        "streams/schemas/user-event.schema.json is stale: regenerate it with "
        "`.venv/bin/python -m streams.schema > streams/schemas/user-event.schema.json`"
    )
    assert json.loads(committed) == json_schema()


def test_the_schema_describes_every_known_type_and_the_envelope() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "event_id",
        "type",
        "timestamp",
        "user_id",
        "anonymous_id",
        "properties",
        "context",
    }
    conditioned = {rule["if"]["properties"]["type"]["const"] for rule in schema["allOf"]}
    with_rules = {t.name for t in EVENT_TYPES.values() if t.properties or t.identity != "either"}
    assert conditioned == with_rules
    assert set(EVENT_TYPES) - with_rules == {"user_deleted"}
    for spec in EVENT_TYPES.values():
        if spec.properties:
            defined = schema["$defs"][f"{spec.name}_properties"]
            assert list(defined["properties"]) == [f.name for f in spec.properties]
            assert defined.get("required", []) == [f.name for f in spec.properties if f.required]
    assert list(schema["$defs"]["context"]["properties"]) == [f.name for f in CONTEXT.fields]


def test_the_schema_examples_are_valid_events() -> None:
    for example in json_schema()["examples"]:
        event = parse_event(orjson.dumps(example), now_ms=1_800_000_000_000)
        assert event.event_id == example["event_id"]


def test_the_schema_patterns_are_the_ones_the_parser_uses() -> None:
    schema = json_schema()
    type_pattern = re.compile(schema["properties"]["type"]["pattern"])
    id_pattern = re.compile(schema["properties"]["event_id"]["pattern"])
    for name in EVENT_TYPES:
        assert type_pattern.fullmatch(name)
    assert not type_pattern.fullmatch("Product Viewed")
    assert id_pattern.fullmatch("u-1 用户")
    assert not id_pattern.fullmatch("u\n1")


def test_the_docs_cover_every_code_type_property_and_setting() -> None:
    docs = DOCS_FILE.read_text(encoding="utf-8")
    for code in REJECTION_CODES:
        assert f"`{code}`" in docs, f"docs/events.md does not document code {code}"
    for spec in EVENT_TYPES.values():
        assert f"### `{spec.name}`" in docs, f"docs/events.md has no section for {spec.name}"
        section = docs.split(f"### `{spec.name}`", 1)[1].split("\n### ", 1)[0]
        for prop in spec.properties:
            assert f"`{prop.name}`" in section, f"{spec.name}.{prop.name} is not documented"
    for field in CONTEXT.fields:
        assert f"`{field.name}`" in docs
    for setting in ("USERPULSE_MAX_EVENT_BYTES", "USERPULSE_MAX_FUTURE_SKEW_S", "user-events.dlq"):
        assert setting in docs
    for header in (
        "userpulse.error.code",
        "userpulse.error.path",
        "userpulse.error.message",
        "userpulse.source.topic",
        "userpulse.source.partition",
        "userpulse.source.offset",
    ):
        assert header in docs


def test_the_documented_examples_are_valid_events() -> None:
    docs = DOCS_FILE.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", docs, flags=re.DOTALL)
    events = [json.loads(block) for block in blocks if '"event_id"' in block]
    assert len(events) >= len(EVENT_TYPES)
    documented = set()
    for doc in events:
        event = parse_event(orjson.dumps(doc), now_ms=1_800_000_000_000)
        documented.add(event.type)
    assert documented >= set(EVENT_TYPES)
