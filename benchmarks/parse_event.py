"""Throughput of streams.events.parse_event on a typical product_viewed record.

Run from the repository root: .venv/bin/python -m benchmarks.parse_event
"""

import time

import orjson

from streams.events import parse_event

NOW = 1_700_000_000_000
DOCS = {
    "product_viewed (epoch ms)": {
        "event_id": "0b7e6c1e-5f1a-4c8e-9d43-2f1d7c9a1b22",
        "type": "product_viewed",
        "user_id": "u-1001",
        "timestamp": NOW - 5_000,
        "properties": {"product_id": "sku-42", "price": 19.9, "currency": "EUR", "name": "Mug"},
        "context": {
            "channel": "web",
            "locale": "en-US",
            "timezone": "Europe/Paris",
            "campaign": {"source": "newsletter", "medium": "email", "name": "spring"},
        },
    },
}
DOCS["product_viewed (ISO timestamp)"] = {
    **DOCS["product_viewed (epoch ms)"],
    "timestamp": "2023-11-14T22:13:15.250Z",
}
DOCS["order_completed (3 lines)"] = {
    **DOCS["product_viewed (epoch ms)"],
    "type": "order_completed",
    "properties": {
        "order_id": "o-1",
        "revenue": 59.7,
        "currency": "EUR",
        "products": [{"product_id": f"sku-{i}", "quantity": 1, "price": 19.9} for i in range(3)],
    },
}


def bench(raw: bytes, n: int = 200_000, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            parse_event(raw, now_ms=NOW)
        best = min(best, time.perf_counter() - start)
    return n / best


for label, doc in DOCS.items():
    raw = orjson.dumps(doc)
    loads = bench.__globals__["orjson"].loads
    start = time.perf_counter()
    for _ in range(200_000):
        loads(raw)
    json_only = 200_000 / (time.perf_counter() - start)
    print(
        f"{label:32s} {len(raw):4d} B  {bench(raw):>10,.0f} events/s  (orjson.loads alone {json_only:,.0f}/s)"
    )
