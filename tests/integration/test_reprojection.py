"""Redis made whole again (agents/worker/reprojection.py): the projected
changelog offset per partition, and the comparison of a partition's states
with Redis — against a real Redis server, with an in-memory state store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from agents.redis.keys import (
    environment_key,
    glob_escape,
    profile_key,
    projected_key,
    tombstone_key,
)
from agents.redis.projection import Behind, RedisProjection
from agents.settings import Settings
from agents.worker.reprojection import Reprojector
from streams.codec import encode_state
from streams.profile import profile_fields, profile_indexes
from streams.state import new_state
from streams.userstate import STAGE_ERASED, UserState

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    yield c
    keys = list(c.scan_iter(f"{glob_escape(settings.redis_key_prefix)}*", count=1000))
    if keys:
        c.unlink(*keys)
    c.close()


class Store:
    """The two reads the reprojector makes of a partition's local state."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}

    def put(self, partition: int, state: UserState, offset: int) -> None:
        key = state.user_id.encode()
        self.rows.setdefault(partition, {})[key] = encode_state(state)
        self.offsets[partition] = offset

    def items_in(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        rows = self.rows.get(partition, {})
        keys = sorted(k for k in rows if after is None or k > after)[:limit]
        return [(k, rows[k]) for k in keys]

    def offset_in(self, partition: int) -> int | None:
        return self.offsets.get(partition)


def user(user_id: str, revision: int, events: int = 1) -> UserState:
    return replace(new_state(user_id, 1_700_000_000_000), revision=revision, event_count=events)


def world(settings: Settings, owned: set[int]) -> tuple[Reprojector, RedisProjection, Store]:
    projection = RedisProjection.from_url(settings.redis_url.reveal(), settings.redis_key_prefix)
    store = Store()

    def project(key: bytes, state: UserState) -> None:
        if state.stage == STAGE_ERASED:
            projection.erase(key.decode(), state.revision)
        else:
            fields = profile_fields(state, version=state.revision)
            projection.stage(state.user_id, state.revision, fields, profile_indexes(state))

    reprojector = Reprojector(
        projection, lambda: store, project, lambda: owned, environment=b'{"env": "test"}'
    )  # type: ignore[arg-type]
    return reprojector, projection, store


async def settle(reprojector: Reprojector) -> None:
    """Let the comparison run, then flush (twice: the comparison's own offsets)."""
    for _ in range(50):
        if reprojector._task is None or reprojector._task.done():
            break
        await asyncio.sleep(0.02)
    await reprojector.flush(time.monotonic())
    await reprojector.flush(time.monotonic())


def test_offsets_are_created_only_after_a_full_comparison_and_never_go_back(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix

    async def scenario() -> tuple[set[int], str | None, str | None]:
        projection = RedisProjection.from_url(settings.redis_url.reveal(), prefix)
        await projection.flush(time.monotonic(), {0: 10})  # not compared: never created
        lost = set(projection.lost)
        projection.lost.clear()
        await projection.flush(time.monotonic(), {0: 10}, frozenset({0}))
        await projection.flush(time.monotonic(), {0: 7})  # an older offset
        created = client.get(projected_key(prefix, 0))
        client.delete(projected_key(prefix, 0))  # Redis lost it
        await projection.flush(time.monotonic(), {0: 12})
        await projection.close()
        return lost | projection.lost, created, client.get(projected_key(prefix, 0))

    lost, created, after_loss = asyncio.run(scenario())
    assert created == "10"
    assert after_loss is None  # not recreated by an ordinary flush
    assert lost == {0}


def test_behind_finds_missing_stale_and_unrecorded_erasures(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    client.hset(profile_key(prefix, "fresh"), mapping={"version": "5"})
    client.hset(profile_key(prefix, "stale"), mapping={"version": "3"})
    client.set(tombstone_key(prefix, "gone"), "9")
    checks = [
        Behind("fresh", 5, False),
        Behind("stale", 4, False),
        Behind("missing", 1, False),
        Behind("gone", 9, True),
        Behind("erase-me", 2, True),
        Behind("gone", 8, False),  # an older state of an erased user: nothing to write
    ]

    async def scenario() -> list[int]:
        projection = RedisProjection.from_url(settings.redis_url.reveal(), prefix)
        try:
            return await projection.behind(checks)
        finally:
            await projection.close()

    assert asyncio.run(scenario()) == [1, 2, 4]


def test_a_partition_taken_after_a_crash_gets_the_profiles_redis_missed(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    reprojector, projection, store = world(settings, {0, 1})
    for i in range(2_500):  # more than one chunk
        store.put(0, user(f"u{i:04d}", revision=2), offset=i)
    store.put(1, user("p1-user", revision=1), offset=0)
    store.put(1, user("quiet", revision=1, events=0), offset=1)  # no profile of its own

    async def scenario() -> None:
        # a previous owner projected partition 0 up to offset 2,000 and partition 1 fully,
        # then crashed before flushing the rest of partition 0
        for i in range(2_000):
            client.hset(profile_key(prefix, f"u{i:04d}"), mapping={"version": "2"})
        client.set(projected_key(prefix, 0), "1999")
        client.set(projected_key(prefix, 1), "1")
        client.hset(profile_key(prefix, "p1-user"), mapping={"version": "1"})
        reprojector.assigned({0, 1})
        await settle(reprojector)
        await projection.close()

    asyncio.run(scenario())
    assert reprojector.compared == 2_500  # partition 0 only: partition 1 was complete
    assert reprojector.restaged == 500
    assert all(client.hget(profile_key(prefix, f"u{i:04d}"), "version") == "2" for i in range(2500))
    assert client.hget(profile_key(prefix, "u2499"), "stage") is not None  # a real profile
    assert client.get(projected_key(prefix, 0)) == "2499"
    assert not client.exists(profile_key(prefix, "quiet"))


def test_a_redis_that_lost_its_data_gets_every_profile_again(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    reprojector, projection, store = world(settings, {2})
    for i in range(300):
        store.put(2, user(f"v{i}", revision=3), offset=i)

    async def scenario() -> tuple[int, int]:
        reprojector.assigned({2})  # first start: no offset in Redis, all compared
        await settle(reprojector)
        first = reprojector.restaged
        assert client.get(projected_key(prefix, 2)) == "299"
        keys = list(client.scan_iter(f"{glob_escape(prefix)}*", count=1000))
        client.unlink(*keys)  # Redis restarted empty (for this test's prefix)
        reprojector._checked_at = 0.0  # the periodic check is due
        await reprojector.flush(time.monotonic())  # finds the offset gone
        await settle(reprojector)
        await projection.close()
        return first, reprojector.restaged

    first, total = asyncio.run(scenario())
    assert first == 300
    assert total == 600
    assert all(client.hget(profile_key(prefix, f"v{i}"), "version") == "3" for i in range(300))
    assert client.get(projected_key(prefix, 2)) == "299"  # created again after the comparison
    assert client.get(environment_key(prefix)) == '{"env": "test"}'  # claimed again
