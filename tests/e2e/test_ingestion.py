"""Bad input never stops the pipeline and nothing counts twice.

One worker process gets a batch with at least one record of every rejection
class plus valid events for three users, then the very same batch again.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from agents.kafka.reader import collect
from agents.redis.keys import profile_key
from agents.settings import Settings
from streams import topics
from streams.contract import REJECTION_CODES
from tests.e2e.conftest import Worker, counters, wait_for

pytestmark = pytest.mark.e2e


def event(user: str, n: int, etype: str, base: int, **props: Any) -> dict[str, Any]:
    return {
        "event_id": f"{user}-{n}",
        "type": etype,
        "user_id": user,
        "timestamp": base + n,
        "properties": props,
        "context": {"channel": "web"},
    }


def batch(base: int) -> tuple[list[tuple[bytes, bytes]], dict[str, tuple[bytes, bytes]]]:
    """(valid records, {rejection code: record}) as (key, value) pairs."""
    valid_docs = [
        event("ana", 1, "signed_up", base),
        event("ana", 2, "product_viewed", base, product_id="p1"),
        event(
            "ana", 3, "product_added", base, product_id="p1", quantity=2, price=9.5, cart_id="c1"
        ),
        event("ben", 1, "session_started", base),
        event("ben", 2, "page_viewed", base, url="/"),
        event("cat", 1, "custom_thing_happened", base),  # unknown type: generic activity
    ]
    valid = [(d["user_id"].encode(), orjson.dumps(d)) for d in valid_docs]

    def doc(**changes: Any) -> bytes:
        d = event("bad", 1, "product_viewed", base, product_id="p1")
        d.update(changes)
        return orjson.dumps({k: v for k, v in d.items() if v is not None})

    def with_props(etype: str, **props: Any) -> bytes:
        return orjson.dumps(event("bad", 9, etype, base, **props))

    order = {"order_id": "o1", "revenue": 10.0, "currency": "EUR", "products": []}
    invalid = {
        "too_large": doc(properties={"product_id": "p1", "blob": "x" * 70_000}),
        "too_deep": doc(context={"deep": orjson.loads(b"[" * 70 + b"]" * 70)}),
        "invalid_utf8": b'{"event_id": "\xff\xfe"}',
        "not_json": b'{"type": "page_viewed", "user_id": "bad"',
        "not_object": b"[1, 2, 3]",
        "unknown_field": doc(userId="bad"),
        "missing_field": doc(event_id=None),
        "wrong_type": doc(properties=["p1"]),
        "empty_id": doc(event_id=""),
        "id_too_long": doc(event_id="e" * 300),
        "control_character": doc(event_id="e\x01"),
        "bad_type": doc(type="Product Viewed"),
        "bad_timestamp": doc(timestamp="yesterday"),
        "future_timestamp": doc(timestamp=base + 10 * 86_400_000),
        "bad_amount": with_props(
            "product_added", product_id="p", quantity=1, price=-1, cart_id="c"
        ),
        "bad_quantity": with_props(
            "product_added", product_id="p", quantity=0, price=1, cart_id="c"
        ),
        "bad_currency": with_props("order_completed", **{**order, "currency": "euro"}),
        "bad_timezone": doc(context={"timezone": "Mars/Olympus_Mons"}),
        "bad_format": doc(context={"locale": "not a locale!"}),
        "key_mismatch": doc(),  # sent below under another key
    }
    keyed = {code: (b"bad", value) for code, value in invalid.items()}
    keyed["key_mismatch"] = (b"somebody-else", invalid["key_mismatch"])
    return valid, keyed


def test_every_rejection_class_is_dead_lettered_and_a_second_publication_changes_nothing(
    settings: Settings, worker: Worker
) -> None:
    base = time.time_ns() // 1_000_000 - 60_000
    valid, invalid = batch(base)
    assert set(invalid) == set(REJECTION_CODES), "a rejection class has no record here"

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=200_000)
    source = settings.topic(topics.USER_EVENTS)

    def publish() -> dict[str, tuple[int, int]]:
        where: dict[str, tuple[int, int]] = {}
        for key, value in valid:
            producer.send(source, key=key, value=value).get(timeout=30)
        for code, (key, value) in invalid.items():
            meta = producer.send(source, key=key, value=value).get(timeout=30)
            where[code] = (meta.partition, meta.offset)
        return where

    first = publish()
    wait_for(
        lambda: (
            counters(settings)["dead_letters"] == len(invalid)
            and counters(settings)["events"] == len(valid)
            and counters(settings)["projection_pending"] == 0
        ),
        90,
        worker,
        "the first batch",
    )

    letters = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.DEAD_LETTERS)],
        lambda rs: len(rs) >= len(invalid),
        timeout_s=30,
    )
    by_code = {r.headers["userpulse.error.code"].decode(): r for r in letters}
    assert set(by_code) == set(invalid), worker.tail()
    for code, record in by_code.items():
        key, value = invalid[code]
        assert record.value == value, f"{code}: the original bytes must be kept untouched"
        assert record.key == key
        h = {k: v.decode() for k, v in record.headers.items()}
        assert h["userpulse.source.topic"] == source
        assert (int(h["userpulse.source.partition"]), int(h["userpulse.source.offset"])) == first[
            code
        ]
        assert h["userpulse.error.message"]
        assert h["userpulse.error.path"].startswith("$")

    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)

    def snapshot() -> dict[str, dict[str, str]]:
        return {
            u: client.hgetall(profile_key(settings.redis_key_prefix, u))
            for u in ("ana", "ben", "cat")
        }

    before = snapshot()
    triggers_before = counters(settings)["triggers"]
    assert triggers_before == 4  # first seen ×3, and ana's product_added activates her
    assert {u: p["event_count"] for u, p in before.items()} == {"ana": "3", "ben": "2", "cat": "1"}
    assert client.keys(profile_key(settings.redis_key_prefix, "bad")) == []

    # the whole batch again: the worker reads it all, dead-letters the bad records
    # again, and no user's state moves
    publish()
    producer.close()
    wait_for(
        lambda: (
            counters(settings)["dead_letters"] == 2 * len(invalid)
            and counters(settings)["events"] == 2 * len(valid)
            and counters(settings)["projection_pending"] == 0
        ),
        60,
        worker,
        "the second batch",
    )
    assert snapshot() == before
    assert counters(settings)["triggers"] == triggers_before  # none emitted twice
    assert worker.proc.poll() is None, "the worker must still be consuming"
    client.close()
