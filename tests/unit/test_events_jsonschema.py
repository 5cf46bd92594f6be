"""The published JSON Schema accepts what the pipeline accepts and rejects what
it rejects (save what a schema cannot express — see docs/events.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator

from streams.contract import EVENT_TYPES
from streams.schema import json_schema
from tests.unit.test_events import REJECTIONS, SCHEMA_FILE, envelope
from tests.unit.test_events_property import valid_docs

VALIDATOR = Draft202012Validator(
    json.loads(SCHEMA_FILE.read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)
#: Rejections a schema cannot express (documented under "The JSON Schema").
BEYOND_A_SCHEMA = {"too_large", "future_timestamp", "bad_timezone"}
BEYOND_A_SCHEMA_IDS = {
    "decimal-qty",  # 2.0 is an integer to JSON Schema
    "float-ts",  # likewise 1.7e12
    "feb-30",  # real-date checks need a date-time format assertion
    "hour-25",
    "offset-24h",
    "iso-before-1973",
}


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(json_schema())


@pytest.mark.parametrize("event_type", [*EVENT_TYPES, "wishlist_shared"])
def test_the_schema_accepts_every_documented_example(event_type: str) -> None:
    assert [e.message for e in VALIDATOR.iter_errors(envelope(event_type))] == []


@pytest.mark.parametrize(
    ("doc", "code", "path"),
    [
        p
        for p in REJECTIONS
        if isinstance(p.values[0], dict)
        and p.values[1] not in BEYOND_A_SCHEMA
        and p.id not in BEYOND_A_SCHEMA_IDS
    ],
)
def test_the_schema_rejects_what_the_parser_rejects(
    doc: dict[str, Any], code: str, path: str
) -> None:
    assert not VALIDATOR.is_valid(doc), (
        f"the schema accepts a record rejected with {code} at {path}"
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(valid_docs())
def test_the_schema_accepts_every_generated_valid_event(doc: dict[str, Any]) -> None:
    assert [e.message for e in VALIDATOR.iter_errors(doc)] == []
