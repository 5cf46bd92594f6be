"""Property tests of the event contract: whatever bytes arrive, parse_event
returns an Event or raises EventError — never anything else, so a record can
always be dead-lettered instead of crashing the agent — and every valid event
survives encode_event → parse_event unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contract import (
    CONTEXT,
    DEFAULT_LIMITS,
    EVENT_TYPES,
    MIN_TIMESTAMP_MS,
    REJECTION_CODES,
    Field,
    Shape,
)
from streams.errors import EventError
from streams.events import Event, encode_event, parse_event

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
LIMITS = DEFAULT_LIMITS

# ---------------------------------------------------------------------------
# Arbitrary JSON

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def outcome(raw: bytes) -> Event | EventError:
    """Parse ``raw``; fail the test on any exception other than EventError."""
    try:
        event = parse_event(raw, now_ms=NOW, limits=LIMITS)
    except EventError as error:
        assert error.code in REJECTION_CODES
        assert error.code != "key_mismatch"
        assert error.path.startswith("$")
        assert error.message
        return error
    assert isinstance(event, Event)
    return event


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_give_an_event_or_an_event_error(raw: bytes) -> None:
    outcome(raw)


@settings(max_examples=300)
@given(json_values)
def test_random_json_gives_an_event_or_an_event_error(value: Any) -> None:
    outcome(orjson.dumps(value))


# ---------------------------------------------------------------------------
# Valid events, generated from the contract tables themselves

id_text = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")),
    min_size=1,
    max_size=24,
)
timestamps_ms = st.integers(min_value=MIN_TIMESTAMP_MS, max_value=NOW + LIMITS.max_future_skew_ms)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def iso_timestamps(draw: st.DrawFn) -> str:
    moment = draw(
        st.datetimes(
            min_value=datetime(1973, 3, 4),  # naive: made aware below
            max_value=datetime(2023, 11, 14, 22, 0),
        )
    )
    text = moment.replace(tzinfo=UTC).astimezone(draw(offsets)).isoformat()
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    return text


KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": id_text,
    "text": st.text(max_size=30),
    "amount": st.floats(min_value=0, max_value=LIMITS.max_amount)
    | st.integers(min_value=0, max_value=int(LIMITS.max_amount)),
    "quantity": st.integers(min_value=1, max_value=LIMITS.max_quantity),
    "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
    "timezone": st.sampled_from(["UTC", "Europe/Paris", "Asia/Shanghai", "America/New_York"]),
    "locale": st.sampled_from(["en", "en-US", "zh-Hans-CN", "pt_BR", "de-DE-1996"]),
    "ip": st.ip_addresses().map(str),
    "boolean": st.booleans(),
}


def field_values(spec: Field) -> st.SearchStrategy[Any]:
    if spec.kind == "object":
        assert spec.shape is not None
        return shape_values(spec.shape)
    if spec.kind == "list":
        assert spec.shape is not None
        return st.lists(shape_values(spec.shape), max_size=3)
    return KIND_VALUES[spec.kind]


@st.composite
def _object_of(draw: st.DrawFn, fields: tuple[Field, ...], closed: bool, min_fields: int) -> Any:
    out: dict[str, Any] = {}
    for spec in fields:
        if spec.required or draw(st.booleans()):
            out[spec.name] = draw(field_values(spec))
        elif draw(st.integers(0, 9)) == 0:
            out[spec.name] = None  # null is the same as absent
    if not closed:
        extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2))
        out.update({k: v for k, v in extra.items() if k not in {f.name for f in fields}})
    if len(out) < min_fields:
        spec = draw(st.sampled_from(fields))
        out[spec.name] = draw(field_values(spec))
    return out


def shape_values(shape: Shape) -> st.SearchStrategy[Any]:
    return _object_of(shape.fields, shape.closed, shape.min_fields)


unknown_type_names = st.from_regex(r"[a-z][a-z0-9]{0,8}(_[a-z0-9]{1,8}){0,3}", fullmatch=True)


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    type_name = draw(st.sampled_from(list(EVENT_TYPES)) | unknown_type_names)
    spec = EVENT_TYPES.get(type_name)
    doc: dict[str, Any] = {
        "event_id": draw(id_text),
        "type": type_name,
        "timestamp": draw(timestamps_ms | iso_timestamps()),
    }
    identity = spec.identity if spec is not None else "either"
    who = draw(st.sampled_from(["user", "anonymous", "both"]))
    if identity == "both" or who in ("user", "both") or identity == "user":
        doc["user_id"] = draw(id_text)
    if identity == "both" or who in ("anonymous", "both"):
        doc["anonymous_id"] = draw(id_text)
    if spec is not None:
        properties = draw(_object_of(spec.properties, False, 0))
    else:
        properties = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    if properties or draw(st.booleans()):
        doc["properties"] = properties
    if draw(st.booleans()):
        doc["context"] = draw(shape_values(CONTEXT))
    return doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_docs())
def test_valid_events_are_accepted_and_round_trip_through_encode_event(doc: dict[str, Any]) -> None:
    event = parse_event(orjson.dumps(doc), now_ms=NOW)
    assert event.type == doc["type"]
    assert event.event_id == doc["event_id"]
    again = parse_event(encode_event(event), now_ms=NOW)
    assert again == event
    assert encode_event(again) == encode_event(event)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_docs(), st.data())
def test_a_valid_event_with_any_one_field_replaced_never_crashes_the_parser(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    targets = [(doc, name) for name in doc]
    for section in ("properties", "context"):
        inner = doc.get(section)
        if isinstance(inner, dict):
            targets.extend((inner, name) for name in inner)
    holder, name = data.draw(st.sampled_from(targets))
    holder[name] = data.draw(json_values)
    outcome(orjson.dumps(doc))


@settings(max_examples=200)
@given(valid_docs(), st.binary(min_size=1, max_size=4), st.integers(min_value=0))
def test_corrupted_bytes_of_a_valid_event_never_crash_the_parser(
    doc: dict[str, Any], noise: bytes, where: int
) -> None:
    raw = orjson.dumps(doc)
    at = where % (len(raw) + 1)
    outcome(raw[:at] + noise + raw[at + len(noise) :])
