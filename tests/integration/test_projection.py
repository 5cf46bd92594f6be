"""The Redis projection (profiles, index sets, erasures) against real Redis servers."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis
from click.testing import CliRunner

from agents.commands.segments import segments_command
from agents.redis.keys import (
    DIMENSIONS,
    TOMBSTONE_TTL_S,
    glob_escape,
    index_key,
    index_values_key,
    profile_key,
    tombstone_key,
)
from agents.redis.profiles import ProfileReader
from agents.redis.projection import RedisProjection
from agents.settings import Settings
from agents.stack.network import free_port, redis_answers

pytestmark = pytest.mark.integration

Indexes = dict[str, str | None]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def idx(
    stage: str, health: str = "active", segment: str | None = None, tier: str = "low"
) -> Indexes:
    return {"stage": stage, "health": health, "segment": segment, "tier": tier}


def each(
    users: tuple[str, ...], version: int, indexes: Indexes
) -> Callable[[RedisProjection], None]:
    """Stage ``users`` at ``version`` with ``indexes`` (and a field naming the user)."""

    def build(p: RedisProjection) -> None:
        for user in users:
            p.stage(user, version, {"n": user}, indexes)

    return build


def project(settings: Settings, build: Callable[[RedisProjection], None]) -> RedisProjection:
    """Stage what ``build`` stages, flush once, close; the projection keeps its counters."""

    async def scenario() -> RedisProjection:
        projection = RedisProjection.from_url(
            settings.redis_url.reveal(), settings.redis_key_prefix
        )
        build(projection)
        await projection.flush(time.monotonic())
        await projection.close()
        return projection

    return run(scenario())


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    """A client of the test's Redis; deletes the test's keys afterwards."""
    c = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    yield c
    keys = list(c.scan_iter(f"{glob_escape(settings.redis_key_prefix)}*", count=1000))
    for start in range(0, len(keys), 1000):
        c.unlink(*keys[start : start + 1000])
    c.close()


def members(client: redis.Redis, settings: Settings, dimension: str, value: str) -> set[str]:
    return client.smembers(index_key(settings.redis_key_prefix, dimension, value))  # type: ignore[return-value]


def test_flush_writes_coalesced_profiles_and_never_goes_backwards(
    settings: Settings, client: redis.Redis
) -> None:
    url, prefix = settings.redis_url.reveal(), settings.redis_key_prefix

    async def scenario() -> tuple[int, int, int]:
        projection = RedisProjection.from_url(url, prefix)
        projection.stage("u1", 1, {"stage": "acquired", "version": "1"}, {"stage": "acquired"})
        projection.stage(
            "u1", 2, {"stage": "activated", "version": "2"}, {"stage": "activated"}
        )  # coalesced
        projection.stage("u2", 1, {"stage": "acquired", "version": "1"}, {"stage": "acquired"})
        assert projection.pending == 2
        first = await projection.flush(time.monotonic())
        projection.stage(
            "u1", 1, {"stage": "acquired", "version": "1"}, {"stage": "acquired"}
        )  # a replayed old update
        second = await projection.flush(time.monotonic())
        stale = projection.stale_skipped
        await projection.close()
        return first, second, stale

    first, second, stale = run(scenario())
    assert (first, second, stale) == (2, 0, 1)
    assert client.hgetall(profile_key(prefix, "u1")) == {
        "stage": "activated",
        "version": "2",
        "idx:stage": "activated",
    }
    assert client.hget(profile_key(prefix, "u2"), "stage") == "acquired"
    # the replayed old update moved no membership either
    assert members(client, settings, "stage", "activated") == {"u1"}
    assert members(client, settings, "stage", "acquired") == {"u2"}


def test_a_stage_change_moves_the_user_between_index_sets(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    project(
        settings,
        each(("u1", "u2"), 1, idx("acquired", health="new")),
    )
    reader = ProfileReader(client, prefix)
    assert reader.counts()["stage"] == {"acquired": 2}

    project(settings, lambda p: p.stage("u1", 2, {"n": "u1"}, idx("activated")))
    assert members(client, settings, "stage", "acquired") == {"u2"}
    assert members(client, settings, "stage", "activated") == {"u1"}
    assert reader.counts() == {
        "stage": {"acquired": 1, "activated": 1},
        "health": {"active": 1, "new": 1},
        "segment": {},
        "tier": {"low": 2},
    }
    assert reader.profile("u1") == {
        "n": "u1",
        "version": "2",
        "idx:stage": "activated",
        "idx:health": "active",
        "idx:tier": "low",
    }

    # the last user leaves 'acquired': the set and its entry in idxvals are gone
    project(settings, lambda p: p.stage("u2", 2, {"n": "u2"}, idx("activated")))
    assert reader.counts()["stage"] == {"activated": 2}
    assert not client.exists(index_key(prefix, "stage", "acquired"))
    assert client.smembers(index_values_key(prefix, "stage")) == {"activated"}


def test_a_none_value_means_no_membership_and_fields_are_replaced_whole(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    reader = ProfileReader(client, prefix)
    project(settings, lambda p: p.stage("u1", 1, {"orders": "0", "cart": "2"}, idx("acquired")))
    assert reader.counts()["segment"] == {}
    assert "idx:segment" not in reader.profile("u1")

    project(
        settings,
        lambda p: p.stage("u1", 2, {"orders": "1"}, idx("monetized", segment="重要价值客户")),
    )
    assert reader.counts()["segment"] == {"重要价值客户": 1}
    assert reader.members("segment", "重要价值客户", 10) == ["u1"]
    profile = reader.profile("u1")
    assert profile["idx:segment"] == "重要价值客户"
    assert "cart" not in profile  # the profile is the complete field set: stale fields go

    project(settings, lambda p: p.stage("u1", 3, {"orders": "1"}, idx("monetized", segment=None)))
    assert reader.counts()["segment"] == {}
    assert "idx:segment" not in reader.profile("u1")
    assert not client.exists(index_key(prefix, "segment", "重要价值客户"))


def test_staged_operations_coalesce_per_user_newest_version_wins(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix

    def build(p: RedisProjection) -> None:
        p.stage("u1", 1, {"v": "1"}, idx("acquired"))
        p.stage("u1", 3, {"v": "3"}, idx("retained"))
        p.stage("u1", 2, {"v": "2"}, idx("activated"))  # arrives late: older than staged 3
        p.stage("u2", 1, {"v": "1"}, idx("acquired"))
        p.erase("u2", 2)  # erasure newer than the staged profile: wins
        p.stage("u3", 1, {"v": "1"}, idx("acquired"))
        p.erase("u3", 2)
        p.stage("u3", 3, {"v": "3"}, idx("activated"))  # profile newer than the erasure: wins
        p.stage("u4", 5, {"v": "5"}, idx("acquired"))
        p.erase("u4", 4)  # an older erasure: dropped while staged
        assert p.pending == 4

    projection = project(settings, build)
    assert (projection.written, projection.erased, projection.stale_skipped) == (3, 1, 0)
    assert client.hget(profile_key(prefix, "u1"), "v") == "3"
    assert not client.exists(profile_key(prefix, "u2"))
    assert client.get(tombstone_key(prefix, "u2")) == "2"
    assert client.hget(profile_key(prefix, "u3"), "version") == "3"
    assert client.hget(profile_key(prefix, "u4"), "version") == "5"
    assert ProfileReader(client, prefix).counts()["stage"] == {
        "acquired": 1,
        "activated": 1,
        "retained": 1,
    }


def test_erasure_removes_the_hash_and_every_membership_and_leaves_a_tombstone(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    full = idx("monetized", health="at_risk", segment="一般挽留客户", tier="mid")
    project(settings, each(("u1", "u2"), 4, full))
    projection = project(settings, lambda p: p.erase("u1", 5))
    assert projection.erased == 1

    assert not client.exists(profile_key(prefix, "u1"))
    for dimension, value in full.items():
        assert value is not None
        assert members(client, settings, dimension, value) == {"u2"}
    assert client.get(tombstone_key(prefix, "u1")) == "5"
    assert 0 < client.ttl(tombstone_key(prefix, "u1")) <= TOMBSTONE_TTL_S

    # erasing the last member of every set leaves no index behind
    project(settings, lambda p: p.erase("u2", 5))
    assert ProfileReader(client, prefix).counts() == {d: {} for d in DIMENSIONS}
    assert sorted(client.scan_iter(f"{prefix}*")) == sorted(
        [tombstone_key(prefix, "u1"), tombstone_key(prefix, "u2"), f"{prefix}idxdims"]
    )


def test_stale_versions_are_refused_including_after_an_erasure(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    reader = ProfileReader(client, prefix)
    project(settings, lambda p: p.stage("u1", 2, {"v": "2"}, idx("activated")))

    refused = project(settings, lambda p: p.stage("u1", 2, {"v": "2b"}, idx("retained")))
    assert refused.stale_skipped == 1 and refused.written == 0  # equal version: refused
    refused = project(settings, lambda p: p.erase("u1", 1))  # an erasure older than the profile
    assert refused.stale_skipped == 1 and refused.erased == 0
    assert reader.profile("u1")["v"] == "2"
    assert reader.counts()["stage"] == {"activated": 1}

    project(settings, lambda p: p.erase("u1", 5))
    for version in (1, 4, 5):  # replays of pre-erasure updates must not resurrect the user
        refused = project(settings, each(("u1",), version, idx("x")))
        assert refused.stale_skipped == 1 and refused.written == 0
    refused = project(settings, lambda p: p.erase("u1", 5))  # a redelivered erasure
    assert refused.stale_skipped == 1
    assert reader.profile("u1") == {}
    assert reader.counts()["stage"] == {}

    # a genuinely newer update (the user came back) recreates the profile
    recreated = project(settings, lambda p: p.stage("u1", 6, {"v": "6"}, idx("acquired")))
    assert recreated.written == 1
    assert reader.profile("u1")["version"] == "6"
    assert reader.counts()["stage"] == {"acquired": 1}
    assert not client.exists(tombstone_key(prefix, "u1"))  # the version guards from now on


def test_stage_rejects_reserved_field_names(settings: Settings) -> None:
    projection = RedisProjection.from_url(settings.redis_url.reveal(), settings.redis_key_prefix)
    with pytest.raises(ValueError, match="reserved"):
        projection.stage("u1", 1, {"idx:stage": "x"}, {})
    with pytest.raises(ValueError, match="dimension"):
        projection.stage("u1", 1, {}, {"a:b": "x"})
    assert projection.pending == 0
    run(projection.close())


def test_one_failing_user_does_not_hold_back_the_others(
    settings: Settings, client: redis.Redis
) -> None:
    prefix = settings.redis_key_prefix
    client.set(profile_key(prefix, "bad"), "not a hash")  # every script on it fails (WRONGTYPE)

    async def scenario() -> None:
        projection = RedisProjection.from_url(settings.redis_url.reveal(), prefix)
        for user in ("u1", "bad", "u2"):
            projection.stage(user, 1, {"n": user}, idx("acquired"))
        assert await projection.flush(time.monotonic()) == 2
        assert projection.pending == 1  # kept, not dropped
        client.delete(profile_key(prefix, "bad"))
        assert await projection.flush(time.monotonic()) == 1
        assert projection.pending == 0
        await projection.close()

    run(scenario())
    assert members(client, settings, "stage", "acquired") == {"u1", "u2", "bad"}


def test_reader_counts_and_members(settings: Settings, client: redis.Redis) -> None:
    prefix = settings.redis_key_prefix
    users = [f"user-{i:03d}" for i in range(250)]

    def build(p: RedisProjection) -> None:
        for i, user in enumerate(users):
            p.stage(user, 1, {"n": str(i)}, idx("activated" if i % 5 else "referrer", tier="high"))
        p.stage("extra", 1, {}, {"channel": "email"})  # a dimension beyond the four

    project(settings, build)
    reader = ProfileReader(client, prefix)
    counts = reader.counts()
    assert list(counts) == [*DIMENSIONS, "channel"]
    assert counts["stage"] == {"activated": 200, "referrer": 50}
    assert counts["channel"] == {"email": 1}
    assert reader.count("tier", "high") == 250

    referrers = [u for i, u in enumerate(users) if i % 5 == 0]
    assert reader.members("stage", "referrer", 1000) == referrers
    some = reader.members("stage", "activated", 30)
    assert len(some) == 30 and some == sorted(some) and set(some) <= set(users)
    assert reader.members("stage", "nobody", 10) == []

    # a client without decode_responses reads the same
    raw = redis.Redis.from_url(settings.redis_url.reveal())
    assert ProfileReader(raw, prefix).counts() == counts
    assert ProfileReader(raw, prefix).profile("user-001")["n"] == "1"
    raw.close()


def test_segments_command_prints_counts_and_members(
    settings: Settings, client: redis.Redis
) -> None:
    def build(p: RedisProjection) -> None:
        for i in range(7):
            p.stage(f"u{i}", 1, {}, idx("activated" if i < 4 else "monetized", tier="mid"))
        p.stage(
            "u7", 1, {}, idx("monetized", health="at_risk", segment="important_value", tier="high")
        )

    project(settings, build)
    runner = CliRunner()
    env = settings.to_env()

    result = runner.invoke(segments_command, [], env=env)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert rows == [
        ["DIMENSION", "VALUE", "USERS"],
        ["stage", "activated", "4"],
        ["stage", "monetized", "4"],
        ["health", "active", "7"],
        ["health", "at_risk", "1"],
        ["segment", "important_value", "1"],
        ["tier", "high", "1"],
        ["tier", "mid", "7"],
    ]

    result = runner.invoke(segments_command, ["--json"], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == {
        "stage": {"activated": 4, "monetized": 4},
        "health": {"active": 7, "at_risk": 1},
        "segment": {"important_value": 1},
        "tier": {"high": 1, "mid": 7},
    }

    result = runner.invoke(segments_command, ["--list", "stage", "monetized"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["u4", "u5", "u6", "u7"]

    result = runner.invoke(
        segments_command, ["--list", "stage", "activated", "--limit", "2", "--json"], env=env
    )
    doc = orjson.loads(result.output)
    assert doc["total"] == 4 and len(doc["members"]) == 2

    # a segment by the value it prints, and by its label (the help's example)
    for name in ("important_value", "重要价值客户"):
        result = runner.invoke(segments_command, ["--list", "segment", name], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.split() == ["u7"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--list", "colour", "red"], "unknown dimension 'colour': use one of stage, health"),
        (
            ["--list", "stage", "activatd"],
            "no stage is called 'activatd': did you mean 'activated'?",
        ),
        (["--list", "segment", "vip"], "the segments are important_value, important_development"),
    ],
)
def test_segments_command_rejects_what_no_index_holds(
    settings: Settings, args: list[str], said: str
) -> None:
    result = CliRunner().invoke(segments_command, args, env=settings.to_env())
    assert result.exit_code == 2
    assert said in result.output, result.output


def test_segments_command_says_how_to_start_redis_when_it_is_down(settings: Settings) -> None:
    env = {**settings.to_env(), "USERPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = CliRunner().invoke(segments_command, [], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("userpulse: error: cannot read Redis")
    assert "userpulse stack up" in result.output and "USERPULSE_REDIS_URL" in result.output


def test_counts_stay_right_for_thousands_of_users_after_several_moves(
    settings: Settings, client: redis.Redis
) -> None:
    rng = random.Random(7)
    stages = ["acquired", "activated", "retained", "monetized", "referrer"]
    healths = ["new", "active", "at_risk", "dormant", "resurrected"]
    segments = [None, "重要价值客户", "重要发展客户", "一般挽留客户"]
    tiers = ["low", "mid", "high"]
    state: dict[str, tuple[int, Indexes | None]] = {}

    def build(p: RedisProjection) -> None:
        for user in (f"u{i}" for i in range(5000)):
            version, _ = state.get(user, (0, None))
            if version and rng.random() < 0.02:
                state[user] = (version + 1, None)
                p.erase(user, version + 1)
                continue
            if version and rng.random() < 0.3:
                continue  # untouched this round
            indexes = {
                "stage": rng.choice(stages),
                "health": rng.choice(healths),
                "segment": rng.choice(segments),
                "tier": rng.choice(tiers),
            }
            state[user] = (version + 1, indexes)
            p.stage(user, version + 1, {"user_id": user, "round": str(version + 1)}, indexes)

    for _ in range(4):
        project(settings, build)

    expected: dict[str, Counter[str]] = {d: Counter() for d in DIMENSIONS}
    for _, indexes in state.values():
        for dimension, value in (indexes or {}).items():
            if value is not None:
                expected[dimension][value] += 1
    counts = ProfileReader(client, settings.redis_key_prefix).counts()
    assert counts == {d: dict(sorted(expected[d].items())) for d in DIMENSIONS}
    assert sum(counts["stage"].values()) == sum(1 for _, i in state.values() if i is not None)


def test_projection_keeps_operations_while_redis_is_down_and_converges_after(
    tmp_path: Path,
) -> None:
    binary = shutil.which("redis-server")
    assert binary, "redis-server must be installed (userpulse stack up installs it)"
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return proc

    server = start_redis()

    async def scenario() -> None:
        nonlocal server
        projection = RedisProjection.from_url(url, "p:")
        projection.stage("u1", 1, {"stage": "acquired"}, idx("acquired"))
        projection.stage("u3", 1, {"stage": "acquired"}, idx("acquired"))
        projection.stage("u4", 1, {"stage": "acquired"}, idx("acquired"))
        assert await projection.flush(time.monotonic()) == 3

        server.terminate()
        server.wait()
        projection.stage("u1", 2, {"stage": "activated"}, idx("activated"))
        projection.stage("u2", 1, {"stage": "acquired"}, idx("acquired"))
        projection.erase("u3", 2)
        assert await projection.flush(time.monotonic()) == 0  # Redis down: nothing lost
        assert projection.pending == 3
        projection.stage("u1", 3, {"stage": "retained"}, idx("retained"))  # newer wins
        projection.erase("u2", 2)  # an erasure replaces the kept profile
        projection.stage("u3", 3, {"stage": "activated"}, idx("activated"))  # ... and vice versa
        projection.erase("u4", 2)
        assert projection.pending == 4
        assert await projection.flush(time.monotonic()) == 0
        assert projection.pending == 4

        server = start_redis()  # the append-only file kept what was written before
        applied = 0
        deadline = time.monotonic() + 20
        while projection.pending and time.monotonic() < deadline:
            applied += await projection.flush(time.monotonic())
            await asyncio.sleep(0.1)
        assert projection.pending == 0 and applied == 4
        assert (projection.written, projection.erased) == (3 + 2, 2)
        await projection.close()

    try:
        asyncio.run(scenario())
        client = redis.Redis.from_url(url, decode_responses=True)
        reader = ProfileReader(client, "p:")
        assert reader.profile("u1") == {
            "stage": "retained",
            "version": "3",
            "idx:stage": "retained",
            "idx:health": "active",
            "idx:tier": "low",
        }
        assert reader.profile("u2") == {} and client.get("p:erased:u2") == "2"
        assert reader.profile("u3")["version"] == "3"
        assert reader.profile("u4") == {} and client.get("p:erased:u4") == "2"
        assert reader.counts()["stage"] == {"activated": 1, "retained": 1}
        assert reader.members("stage", "activated", 10) == ["u3"]
        client.close()
    finally:
        server.terminate()
        server.wait()


@pytest.mark.parametrize("glob", ["*", "?", "[ab]", "\\"])
def test_the_cleanup_pattern_of_a_prefix_with_glob_characters_matches_only_its_keys(
    client: redis.Redis, settings: Settings, glob: str
) -> None:
    """docs/redis.md, "Removing a deployment's keys": a prefix (or an id)
    with Redis glob characters must not sweep another deployment's keys."""
    base = settings.redis_key_prefix
    ours, theirs = f"{base}{glob}:", f"{base}a:"  # unescaped, "*", "?", "[ab]" match theirs
    client.set(profile_key(ours, "u1"), "1")
    client.set(profile_key(theirs, "u1"), "1")
    client.set(f"{base}:profile:u1", "1")  # what an unescaped "\\" matches
    found = set(client.scan_iter(f"{glob_escape(ours)}*", count=1000))
    assert found == {profile_key(ours, "u1")}
    assert set(client.scan_iter(f"{glob_escape(base)}*", count=1000)) >= found  # the fixture's
