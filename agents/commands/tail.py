"""``userpulse tail``'s lines: one per record — a trigger, a dead letter or
an event said in words with ISO-8601 times (UTC), anything else as its key
and value — or, with ``--json``, the record as one JSON object a line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from agents.kafka.deadletters import DLQ_HEADERS
from agents.kafka.reader import Record

_CODE, _PATH, _MESSAGE, _TOPIC, _PARTITION, _OFFSET = DLQ_HEADERS
#: the longest value shown of a record that is none of the known kinds
SHOWN_BYTES = 200


def iso(ms: Any) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds (else as it is)."""
    if type(ms) is not int:
        return str(ms)
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_json(record: Record) -> str:
    """The record as one line of JSON: where it is, key, value (parsed when
    it is JSON, else text) and headers."""
    value: Any
    try:
        value = record.json()
    except orjson.JSONDecodeError:
        value = (record.value or b"").decode(errors="replace")
    doc: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode(errors="replace") if record.key is not None else None,
        "value": value,
    }
    if record.headers:
        doc["headers"] = {k: v.decode(errors="replace") for k, v in record.headers.items()}
    return orjson.dumps(doc).decode()


def line(record: Record) -> str:
    """The record in one line of words."""
    where = f"p{record.partition}@{record.offset}"
    headers = record.headers
    if _CODE in headers:
        return f"{where}  {_dead_letter(headers)}"
    try:
        doc = record.json()
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "trigger_id" in doc and "type" in doc:
        return f"{iso(doc.get('occurred_at'))}  {where}  {_trigger(doc)}"
    if isinstance(doc, dict) and "type" in doc and "timestamp" in doc:
        who = doc.get("user_id") or doc.get("anonymous_id")
        props = doc.get("properties")
        shown = f"  {orjson.dumps(props).decode()}" if props else ""
        return f"{iso(doc['timestamp'])}  {where}  {doc['type']}  user={who}{shown}"
    key = record.key.decode(errors="replace") if record.key is not None else "-"
    value = (record.value or b"")[:SHOWN_BYTES].decode(errors="replace")
    more = "…" if len(record.value or b"") > SHOWN_BYTES else ""
    return f"{where}  key={key}  {value}{more}"


def _trigger(doc: dict[str, Any]) -> str:
    reason = doc.get("reason") or {}
    payload = doc.get("payload") or {}
    if "to" in reason:
        what = f"{reason.get('from')} -> {reason.get('to')}"
    elif "step" in reason:
        what = f"step {reason.get('step')}"
        if "value" in payload:
            what += f", cart value {payload['value']}"
    else:
        what = ", ".join(f"{k}={v}" for k, v in reason.items() if k != "rule")
    rule = f"  rule={reason['rule']}" if "rule" in reason else ""
    trigger_id = str(doc.get("trigger_id", ""))
    return f"{doc['type']}  user={doc.get('user_id')}  {what}{rule}  id={trigger_id[:12]}…"


def _dead_letter(headers: dict[str, bytes]) -> str:
    def h(name: str) -> str:
        return headers.get(name, b"").decode(errors="replace")

    source = f"{h(_TOPIC)}[{h(_PARTITION)}]@{h(_OFFSET)}"
    return f"dead letter  {h(_CODE)} at {h(_PATH)}: {h(_MESSAGE)}  (from {source})"
