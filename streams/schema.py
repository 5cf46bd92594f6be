"""The event contract as JSON Schema (draft 2020-12), rendered from the tables
of :mod:`streams.contract` — the same tables :func:`streams.events.parse_event`
checks against.

The rendering is committed at ``streams/schemas/user-event.schema.json`` for
producers in other languages; regenerate it with
``python -m streams.schema > streams/schemas/user-event.schema.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from streams.contract import (
    CONTEXT,
    CURRENCY_PATTERN,
    DEFAULT_LIMITS,
    EVENT_TYPES,
    ID_PATTERN,
    ISO_TIMESTAMP_PATTERN,
    LOCALE_PATTERN,
    MAX_LOCALE_LENGTH,
    MAX_TIMEZONE_LENGTH,
    MAX_TYPE_LENGTH,
    MIN_TIMESTAMP_MS,
    TIMEZONE_PATTERN,
    TYPE_PATTERN,
    Field,
    Kind,
    Limits,
    Shape,
)

SCHEMA_ID: Final = "urn:userpulse:schema:user-event"


def json_schema(limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The contract as a JSON Schema (draft 2020-12), built from the same tables
    as :func:`streams.events.parse_event`.

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
        return {"type": "string", "maxLength": MAX_TIMEZONE_LENGTH, "pattern": TIMEZONE_PATTERN}
    if kind == "locale":
        return {"type": "string", "maxLength": MAX_LOCALE_LENGTH, "pattern": LOCALE_PATTERN}
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
