"""Deterministic, realistic user events for the benchmarks — generated fast
and loaded into Kafka fast, so that neither is ever the bottleneck.

The mix: every user starts with ``signed_up`` (40 %) or ``session_started``;
then sessions (``session_started`` and on average 7 more events) of
product views ≫ page views ≫ cart changes ≫ checkouts and orders. Events per
user are heavy-tailed (Zipf–Mandelbrot weights, capped), every user has at
least one event, products are Zipf-like too. Timestamps lie between
``now − days`` and ``now`` (inside the pipeline's allowed skew); the
events are sent in event-time order, keyed by user id, each user's events in
its own order. Everything but the time anchor follows from the seed.

Events are pre-encoded: one bytes template per event type, filled with ``%``
formatting type by type from numpy-drawn columns. The loader builds
record batches per partition itself (aiokafka ``create_batch``/``send_batch``,
1 MiB batches, no compression — the broker is on the same machine) with the
partition of each user computed once with Kafka's murmur2 partitioner, as
every other producer of userpulse (kafka-python's default) would choose it.

Run from the repository root:

    .venv/bin/python -m benchmarks.generator --selftest
    .venv/bin/python -m benchmarks.generator --events 2000000 --users 200000   # generation rate only
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka.partitioner.default import murmur2

#: event type codes, in the order of TEMPLATES
SIGNED_UP, SESSION_STARTED, PAGE_VIEWED, PRODUCT_VIEWED = 0, 1, 2, 3
PRODUCT_ADDED, PRODUCT_REMOVED, CHECKOUT_STARTED, ORDER_COMPLETED, CONSENT_UPDATED = 4, 5, 6, 7, 8
TYPE_NAMES = (
    "signed_up",
    "session_started",
    "page_viewed",
    "product_viewed",
    "product_added",
    "product_removed",
    "checkout_started",
    "order_completed",
    "consent_updated",
)
#: share of each type among the events of a session after its session_started
SESSION_MIX = {
    PRODUCT_VIEWED: 0.600,
    PAGE_VIEWED: 0.270,
    PRODUCT_ADDED: 0.080,
    PRODUCT_REMOVED: 0.015,
    CHECKOUT_STARTED: 0.020,
    ORDER_COMPLETED: 0.012,
    CONSENT_UPDATED: 0.003,
}
#: a new session starts with this probability at each event (mean length 8)
NEW_SESSION_P = 1 / 8
SIGNED_UP_FIRST_P = 0.4
#: Zipf–Mandelbrot weights 1/(rank + Q)^S for the events of each user, capped
ZIPF_Q, ZIPF_S, MAX_EVENTS_PER_USER = 5.0, 1.1, 5000
PRODUCTS = 50_000
CHANNELS = (b"web", b"ios", b"android", b"email", b"paid_search")
DAY_MS = 86_400_000

_HEAD = b'{"event_id":"%%s%%d","type":"%s","user_id":"%%s%%d","timestamp":%%d,'
_CONTEXT = b'"context":{"channel":"%s","locale":"en-US"}}'
#: per type: the properties part; the columns it takes are in _columns()
_PROPERTIES = {
    SIGNED_UP: b'"properties":{"method":"email"},"context":{"channel":"%s","locale":"en-US",'
    b'"campaign":{"source":"newsletter","medium":"email","name":"spring"}}}',
    SESSION_STARTED: b'"properties":{"session_id":"s%d"},',
    PAGE_VIEWED: b'"properties":{"path":"/c/%d","title":"Category"},',
    PRODUCT_VIEWED: b'"properties":{"product_id":"sku-%d","price":%s,"currency":"EUR"},',
    PRODUCT_ADDED: b'"properties":{"product_id":"sku-%d","quantity":%d,"price":%s,'
    b'"cart_id":"c-%d","currency":"EUR"},',
    PRODUCT_REMOVED: b'"properties":{"product_id":"sku-%d","quantity":1,"price":%s,'
    b'"cart_id":"c-%d","currency":"EUR"},',
    CHECKOUT_STARTED: b'"properties":{"cart_id":"c-%d","currency":"EUR"},',
    ORDER_COMPLETED: b'"properties":{"order_id":"o-%d","revenue":%s,"currency":"EUR",'
    b'"products":[{"product_id":"sku-%d","quantity":1,"price":%s}],"cart_id":"c-%d"},',
    CONSENT_UPDATED: b'"properties":{"channels":{"email":%s}},',
}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python,
    aiokafka) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Dataset:
    """Pre-encoded events in send order (event-time order)."""

    keys: list[bytes]
    values: list[bytes]
    #: partition of each event (its user's partition)
    partitions: list[int]
    #: index of each user's first event (it creates the user: a stage_changed trigger)
    first_events: np.ndarray
    #: the ``event_id`` of event ``i`` is ``event_id_prefix + str(i)``
    event_id_prefix: str
    users: int
    partition_count: int
    types: np.ndarray
    #: events of each user (by user number)
    per_user: np.ndarray
    generate_s: float

    def __len__(self) -> int:
        return len(self.values)

    @property
    def events(self) -> int:
        return len(self.values)

    def event_id(self, i: int) -> str:
        return f"{self.event_id_prefix}{i}"

    def bytes_total(self) -> int:
        return sum(map(len, self.values)) + sum(map(len, self.keys))

    def type_counts(self) -> dict[str, int]:
        counts = np.bincount(self.types, minlength=len(TYPE_NAMES))
        return {name: int(counts[i]) for i, name in enumerate(TYPE_NAMES)}


def events_per_user(rng: np.random.Generator, events: int, users: int) -> np.ndarray:
    """Heavy-tailed events per user, each at least 1, summing to ``events``."""
    if events < users:
        raise ValueError(f"need at least one event per user: {events:,} events < {users:,} users")
    counts = np.ones(users, dtype=np.int64)
    extra = events - users
    if extra:
        ranks = np.arange(1, users + 1, dtype=np.float64)
        weights = 1.0 / (ranks + ZIPF_Q) ** ZIPF_S
        counts += rng.multinomial(extra, weights / weights.sum())
        # cap the heaviest users; give what is cut to users drawn uniformly
        over = np.maximum(counts - MAX_EVENTS_PER_USER, 0)
        if over.any():
            counts -= over
            counts += np.bincount(rng.integers(0, users, int(over.sum())), minlength=users)
    return rng.permutation(counts)  # heavy users are not the low ids


def generate(
    events: int,
    users: int,
    *,
    seed: int = 42,
    partitions: int = 8,
    days: int = 28,
    now_ms: int | None = None,
    user_prefix: str = "u",
    event_id_prefix: str | None = None,
    live_rate: float | None = None,
) -> Dataset:
    """``events`` events of ``users`` users (see the module docstring).

    With ``live_rate`` the events are a live stream instead of history: in
    send order, event ``i`` is stamped ``now + i / live_rate`` seconds, so
    sent at that rate each carries (about) its send time."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    counts = events_per_user(rng, events, users)
    user = np.repeat(np.arange(users, dtype=np.int64), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(events, dtype=np.int64) - np.repeat(starts, counts)
    first = position == 0
    new_session = first | (rng.random(events) < NEW_SESSION_P)

    # times: each user starts somewhere in the window; sessions ~2 days apart,
    # events in a session ~30 s apart; nothing later than now − 1 s
    gaps = np.where(
        new_session, rng.exponential(2 * DAY_MS, events), rng.exponential(30_000, events)
    )
    gaps[first] = 0
    user_start = now - days * DAY_MS + rng.integers(0, days * DAY_MS - 3_600_000, users)
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[starts], counts)
    ts = np.minimum(np.repeat(user_start, counts) + elapsed.astype(np.int64), now - 1000)

    mix_types = np.array(list(SESSION_MIX), dtype=np.int64)
    mix_p = np.array(list(SESSION_MIX.values()))
    types = mix_types[rng.choice(len(mix_types), events, p=mix_p / mix_p.sum())]
    types[new_session] = SESSION_STARTED
    types[first & (rng.random(events) < SIGNED_UP_FIRST_P)] = SIGNED_UP

    # event-time order; a stable sort keeps each user's own order
    order = np.argsort(ts, kind="stable")
    user, ts, types, first = user[order], ts[order], types[order], first[order]
    if live_rate:
        ts = now + (np.arange(events, dtype=np.float64) * 1000.0 / live_rate).astype(np.int64)

    product = (rng.pareto(1.2, events) * 50).astype(np.int64) % PRODUCTS
    quantity = rng.integers(1, 4, events)
    consent = rng.random(events) < 0.7
    prices = [b"%.2f" % (1.99 + (p * 7919 % 19_900) / 100) for p in range(PRODUCTS)]
    channel_of_user = rng.integers(0, len(CHANNELS), users)

    eid_prefix = event_id_prefix if event_id_prefix is not None else f"g{seed}-"
    eid_b, user_b = eid_prefix.encode(), user_prefix.encode()
    values: list[bytes] = [b""] * events
    user_list = user.tolist()
    for code, name in enumerate(TYPE_NAMES):
        sel = np.flatnonzero(types == code)
        if not len(sel):
            continue
        head = _HEAD % name.encode()
        props = _PROPERTIES[code]
        template = head + props + (b"" if code == SIGNED_UP else _CONTEXT)  # channel last
        idx = sel.tolist()
        uid = user[sel].tolist()
        channel = [CHANNELS[c] for c in channel_of_user[user[sel]].tolist()]
        n = len(idx)
        columns = _columns(code, idx, uid, product[sel], quantity[sel], consent[sel], prices)
        rows = zip(
            [eid_b] * n, idx, [user_b] * n, uid, ts[sel].tolist(), *columns, channel, strict=True
        )
        for i, value in zip(idx, map(template.__mod__, rows), strict=True):
            values[i] = value

    user_keys = [b"%s%d" % (user_b, u) for u in range(users)]
    user_partition = [partition_for(k, partitions) for k in user_keys]
    return Dataset(
        keys=[user_keys[u] for u in user_list],
        values=values,
        partitions=[user_partition[u] for u in user_list],
        first_events=np.flatnonzero(first),
        event_id_prefix=eid_prefix,
        users=users,
        partition_count=partitions,
        types=types,
        per_user=counts,
        generate_s=time.perf_counter() - started,
    )


def _columns(
    code: int,
    idx: list[int],
    uid: list[int],
    product: np.ndarray,
    quantity: np.ndarray,
    consent: np.ndarray,
    prices: list[bytes],
) -> list[Sequence[Any]]:
    """The columns that fill type ``code``'s properties template."""
    prod = product.tolist()
    price = [prices[p] for p in prod]
    if code == SESSION_STARTED:
        return [idx]
    if code == PAGE_VIEWED:
        return [[p % 200 for p in prod]]
    if code == PRODUCT_VIEWED:
        return [prod, price]
    if code == PRODUCT_ADDED:
        return [prod, quantity.tolist(), price, uid]
    if code == PRODUCT_REMOVED:
        return [prod, price, uid]
    if code == CHECKOUT_STARTED:
        return [uid]
    if code == ORDER_COMPLETED:
        return [idx, price, prod, price, uid]
    if code == CONSENT_UPDATED:
        return [[b"true" if c else b"false" for c in consent.tolist()]]
    return []


# ---- loading -------------------------------------------------------------------
@dataclass(frozen=True)
class LoadReport:
    events: int
    bytes: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


async def load_async(
    bootstrap: str,
    topic: str,
    dataset: Dataset,
    *,
    batch_bytes: int = 1 << 20,
    indices: Sequence[int] | None = None,
) -> LoadReport:
    """Produce ``dataset`` (or its events at ``indices``) into ``topic``,
    keyed by user, in order; wait until every batch is acknowledged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        acks=1,
        linger_ms=20,
        max_batch_size=batch_bytes,
        max_request_size=4 * batch_bytes,
        compression_type=None,
        client_id="userpulse-bench-loader",
    )
    await producer.start()
    try:
        started = time.perf_counter()
        batches: dict[int, Any] = {}
        pending: list[asyncio.Future[Any]] = []
        keys, values, parts = dataset.keys, dataset.values, dataset.partitions
        order = range(len(values)) if indices is None else indices
        size = 0
        for i in order:
            p = parts[i]
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=keys[i], value=values[i], timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=keys[i], value=values[i], timestamp=None)
            size += len(keys[i]) + len(values[i])
        for p, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return LoadReport(events=len(order), bytes=size, seconds=seconds)


def load(bootstrap: str, topic: str, dataset: Dataset, **kwargs: Any) -> LoadReport:
    return asyncio.run(load_async(bootstrap, topic, dataset, **kwargs))


# ---- self-test -------------------------------------------------------------------
def selftest(events: int = 50_000, users: int = 5_000) -> list[str]:
    """Problems found in a generated data set (empty when it is sound): every
    event passes the pipeline's own validation with a key equal to its user,
    ids are unique, each user's events are in time order, every user has a
    first event, the mix is views ≫ carts ≫ orders, the same seed gives the
    same bytes."""
    from streams.errors import EventError
    from streams.events import parse_event

    now = time.time_ns() // 1_000_000
    data = generate(events, users, seed=7, now_ms=now)
    problems: list[str] = []
    seen_ids: set[str] = set()
    last_ts: dict[bytes, int] = {}
    for i, (key, value) in enumerate(zip(data.keys, data.values, strict=True)):
        try:
            event = parse_event(value, now_ms=now)
        except EventError as exc:
            problems.append(f"event {i} rejected: {exc} — {value[:160]!r}")
            if len(problems) > 5:
                break
            continue
        if event.key.encode() != key:
            problems.append(f"event {i}: key {key!r} is not its user {event.key!r}")
        if event.event_id != data.event_id(i) or event.event_id in seen_ids:
            problems.append(f"event {i}: event_id {event.event_id!r} not unique or not as expected")
        seen_ids.add(event.event_id)
        if event.timestamp_ms < last_ts.get(key, 0):
            problems.append(f"event {i}: out of time order for {key!r}")
        last_ts[key] = event.timestamp_ms
        if not now - 29 * DAY_MS <= event.timestamp_ms < now:
            problems.append(f"event {i}: timestamp {event.timestamp_ms} outside the window")
        if data.partitions[i] != partition_for(key, data.partition_count):
            problems.append(f"event {i}: wrong partition")
    if len(last_ts) != users or len(data.first_events) != users:
        problems.append(f"{len(last_ts):,} users have events, {users:,} expected")
    firsts = set(data.first_events.tolist())
    first_keys = {data.keys[i] for i in firsts}
    if len(first_keys) != users:
        problems.append("first events do not cover every user exactly once")
    mix = data.type_counts()
    views = mix["product_viewed"] + mix["page_viewed"]
    carts = mix["product_added"] + mix["product_removed"]
    if not views > 5 * carts > 5 * 2 * mix["order_completed"] > 0:
        problems.append(f"mix is not views ≫ carts ≫ orders: {mix}")
    again = generate(events, users, seed=7, now_ms=now)
    if again.values != data.values or again.keys != data.keys:
        problems.append("the same seed gave different events")
    return problems


def describe(data: Dataset) -> str:
    per_user = data.per_user
    mix = data.type_counts()
    mix_text = ", ".join(f"{k} {v / len(data):.1%}" for k, v in mix.items() if v)
    return (
        f"{len(data):,} events, {data.users:,} users, "
        f"{data.bytes_total() / len(data):.0f} B/event avg; events/user median "
        f"{int(np.median(per_user))}, p99 {int(np.percentile(per_user, 99))}, max {per_user.max()}\n"
        f"  mix: {mix_text}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="validate a small data set with the pipeline's parse_event and check its shape",
    )
    args = parser.parse_args(argv)
    if args.selftest:
        started = time.perf_counter()
        problems = selftest()
        for problem in problems:
            print(f"  FAIL {problem}")
        verdict = "FAILED" if problems else "ok"
        print(
            f"generator selftest {verdict}: 50,000 events of 5,000 users through "
            f"streams.events.parse_event in {time.perf_counter() - started:.1f} s"
        )
        return 1 if problems else 0
    data = generate(args.events, args.users, seed=args.seed)
    print(describe(data))
    print(
        f"generated in {data.generate_s:.2f} s = {len(data) / data.generate_s:,.0f} events/s "
        "(pre-encoded, including keys and partitions)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
