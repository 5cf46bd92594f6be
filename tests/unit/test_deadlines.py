"""The worker's deadline index (agents/worker/deadlines.py) without Kafka: rows
stand in for the state table."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from agents.worker import deadlines as deadlines_module
from agents.worker.deadlines import Deadlines
from streams.codec import encode_state
from streams.events import Event
from streams.partitioning import partition_of
from streams.policy import DEFAULT_POLICY
from streams.state import apply
from streams.userstate import UserState

PARTITIONS = 4
T0 = 1_700_006_400_000


def deadline_of(state: UserState | None) -> int | None:
    return None if state is None else state.last_seen_ms + 1000


def user(name: str, at_ms: int) -> UserState:
    event = Event(f"e-{name}", "session_started", at_ms, user_id=name, context={"channel": "web"})
    state = apply(None, event, DEFAULT_POLICY)
    assert state is not None
    return state


def keys_on(partition: int, n: int) -> list[bytes]:
    out = []
    i = 0
    while len(out) < n:
        key = f"user-{i}".encode()
        if partition_of(key, PARTITIONS) == partition:
            out.append(key)
        i += 1
    return out


def due(d: Deadlines, partition: int, now_ms: int) -> dict[bytes, int]:
    return dict(d.timers[partition].pop_due(now_ms))


def test_partition_of_matches_kafkas_default_partitioner() -> None:
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    for i in range(200):
        key = f"user-{i}".encode()
        assert partition_of(key, 12) == (kafka_murmur2(key) & 0x7FFFFFFF) % 12


def test_advance_keeps_the_newest_stream_time() -> None:
    d = Deadlines(PARTITIONS, deadline_of)
    d.advance(0, T0)
    d.advance(0, T0 - 5)
    assert d.stream_time == {0: T0}


def test_rebuild_indexes_owned_partitions_only_and_advances_stream_time() -> None:
    mine, theirs = keys_on(0, 3), keys_on(1, 2)
    rows = [(k, encode_state(user(k.decode(), T0 + i))) for i, k in enumerate(mine + theirs)]

    async def run() -> Deadlines:
        d = Deadlines(PARTITIONS, deadline_of)
        d.rebuild({0}, lambda: iter(rows))
        assert d.rebuilding
        await d.wait_rebuilt()
        return d

    d = asyncio.run(run())
    assert not d.rebuilding
    assert d.rebuilds == 1
    assert set(d.timers) == {0}
    assert d.stream_time == {0: T0 + 2}
    assert due(d, 0, T0 + 5000) == {k: T0 + i + 1000 for i, k in enumerate(mine)}


def test_rebuild_skips_unreadable_rows() -> None:
    good, bad = keys_on(2, 2)
    rows = [(bad, b"not json"), (good, encode_state(user("g", T0)))]

    async def run() -> Deadlines:
        d = Deadlines(PARTITIONS, deadline_of)
        d.rebuild({2}, lambda: iter(rows))
        await d.wait_rebuilt()
        return d

    d = asyncio.run(run())
    assert due(d, 2, T0 + 5000) == {good: T0 + 1000}


def test_a_user_stored_during_the_rebuild_keeps_its_newer_deadline(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(deadlines_module, "REBUILD_CHUNK", 2)
    keys = keys_on(3, 6)
    stale = {k: encode_state(user(k.decode(), T0)) for k in keys}
    late_key = keys[-1]  # read by the rebuild only after the stream stored it again

    def rows() -> Iterator[tuple[bytes, bytes]]:
        yield from stale.items()

    async def run() -> Deadlines:
        d = Deadlines(PARTITIONS, deadline_of)
        d.rebuild({3}, rows)
        await asyncio.sleep(0)  # the rebuild reads a chunk, then yields
        # the stream stores the user again: the engine sets its deadline, the worker says so
        d.part(3).timers.set(late_key, deadline_of(user(late_key.decode(), T0 + 60_000)))
        d.stored([late_key])
        await d.wait_rebuilt()
        return d

    d = asyncio.run(run())
    got = due(d, 3, T0 + 120_000)
    assert got[late_key] == T0 + 61_000
    assert all(got[k] == T0 + 1000 for k in keys if k != late_key)


def test_a_new_rebuild_supersedes_the_running_one() -> None:
    first, second = keys_on(0, 1), keys_on(1, 1)
    rows = [(first[0], encode_state(user("f", T0))), (second[0], encode_state(user("s", T0)))]

    async def run() -> Deadlines:
        d = Deadlines(PARTITIONS, deadline_of)
        d.rebuild({0}, lambda: iter(rows))
        d.rebuild({1}, lambda: iter(rows))  # a rebalance before the first one ran
        await d.wait_rebuilt()
        return d

    d = asyncio.run(run())
    assert d.rebuilds == 2
    assert d.owned == {1}
    assert set(d.timers) == {1}
    assert due(d, 1, T0 + 5000) == {second[0]: T0 + 1000}
