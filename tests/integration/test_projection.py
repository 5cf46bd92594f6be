"""The Redis projection against real Redis servers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from agents.projection import RedisProjection, profile_key
from agents.settings import Settings
from agents.stack import free_port, redis_answers

pytestmark = pytest.mark.integration


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_flush_writes_coalesced_profiles_and_never_goes_backwards(settings: Settings) -> None:
    url, prefix = settings.redis_url.reveal(), settings.redis_key_prefix
    client = redis.Redis.from_url(url, decode_responses=True)

    async def scenario() -> tuple[int, int, int]:
        projection = RedisProjection.from_url(url, prefix)
        projection.stage("u1", 1, {"stage": "acquired", "version": "1"})
        projection.stage("u1", 2, {"stage": "activated", "version": "2"})  # coalesced
        projection.stage("u2", 1, {"stage": "acquired", "version": "1"})
        assert projection.pending == 2
        first = await projection.flush(time.monotonic())
        projection.stage("u1", 1, {"stage": "acquired", "version": "1"})  # a replayed old update
        second = await projection.flush(time.monotonic())
        stale = projection.stale_skipped
        await projection.close()
        return first, second, stale

    first, second, stale = run(scenario())  # type: ignore[misc]
    assert (first, second, stale) == (2, 0, 1)
    assert client.hgetall(profile_key(prefix, "u1")) == {"stage": "activated", "version": "2"}
    assert client.hget(profile_key(prefix, "u2"), "stage") == "acquired"
    client.close()


def test_projection_keeps_profiles_while_redis_is_down_and_converges_after(tmp_path: Path) -> None:
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
        projection.stage("u1", 1, {"stage": "acquired", "version": "1"})
        assert await projection.flush(time.monotonic()) == 1

        server.terminate()
        server.wait()
        projection.stage("u1", 2, {"stage": "activated", "version": "2"})
        projection.stage("u2", 1, {"stage": "acquired", "version": "1"})
        assert await projection.flush(time.monotonic()) == 0  # Redis down: nothing lost
        assert projection.pending == 2
        projection.stage("u1", 3, {"stage": "retained", "version": "3"})  # newer wins
        assert projection.pending == 2

        server = start_redis()
        written = 0
        deadline = time.monotonic() + 20
        while projection.pending and time.monotonic() < deadline:
            written += await projection.flush(time.monotonic())
            await asyncio.sleep(0.1)
        assert projection.pending == 0 and written == 2
        await projection.close()

    try:
        asyncio.run(scenario())
        client = redis.Redis.from_url(url, decode_responses=True)
        # the restarted server is empty (no persistence), so both profiles were rewritten
        assert client.hgetall("p:profile:u1") == {"stage": "retained", "version": "3"}
        assert client.hget("p:profile:u2", "stage") == "acquired"
        client.close()
    finally:
        server.terminate()
        server.wait()
