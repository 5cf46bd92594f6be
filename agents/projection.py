"""The Redis profile projection: a hash per user, written in batches.

The agent only *stages* a profile (a dict write, never I/O); a timer flushes
the staged profiles in one pipeline. Writes are coalesced per user (only the
newest staged profile of a user is written) and idempotent (a Lua script
refuses a version older than the stored one), so redelivery or a replay never
moves a profile backwards. When Redis is down, flushes fail, the staged
profiles stay, and the projection converges once Redis answers again — the
stream is never blocked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# KEYS[1] = profile hash; ARGV[1] = version; ARGV[2..] = field, value, ...
# Writes only when the stored version is absent or older.
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def profile_key(prefix: str, user_id: str) -> str:
    return f"{prefix}profile:{user_id}"


class RedisProjection:
    """Coalescing, idempotent, non-blocking writer of user profiles."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, *, max_batch: int = 2000) -> None:
        self._client = client
        self._prefix = key_prefix
        self._max_batch = max_batch
        self._staged: dict[str, tuple[int, Mapping[str, str]]] = {}
        self._script = client.register_script(_WRITE_IF_NEWER)
        self._down_since: float | None = None
        self.written = 0
        self.stale_skipped = 0

    @classmethod
    def from_url(cls, url: str, key_prefix: str) -> RedisProjection:
        client = aioredis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10
        )
        return cls(client, key_prefix)

    @property
    def pending(self) -> int:
        return len(self._staged)

    def stage(self, user_id: str, version: int, fields: Mapping[str, str]) -> None:
        """Queue ``fields`` for ``user_id``; a newer staged version replaces an older one."""
        current = self._staged.get(user_id)
        if current is None or current[0] <= version:
            self._staged[user_id] = (version, fields)

    async def flush(self, now: float) -> int:
        """Write what is staged, in batches; return how many hashes were written.

        On a Redis error the unwritten profiles stay staged (a newer profile
        staged meanwhile wins) and the error is logged once per outage.
        """
        written = 0
        while self._staged:
            batch = list(self._staged.items())[: self._max_batch]
            for user_id, _ in batch:
                del self._staged[user_id]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for user_id, (version, fields) in batch:
                        args: list[str | int] = [version]
                        for name, value in fields.items():
                            args += [name, value]
                        await self._script(
                            keys=[profile_key(self._prefix, user_id)], args=args, client=pipe
                        )
                    results = await pipe.execute()
            except (RedisError, OSError) as exc:
                for user_id, staged in batch:
                    self.stage(user_id, *staged)
                if self._down_since is None:
                    self._down_since = now
                    logger.warning(
                        "Redis projection: write failed (%s); %d profiles kept and retried",
                        exc,
                        self.pending,
                    )
                return written
            if self._down_since is not None:
                logger.warning(
                    "Redis projection: Redis is back after %.1f s", now - self._down_since
                )
                self._down_since = None
            applied = sum(1 for r in results if r == 1)
            written += applied
            self.stale_skipped += len(results) - applied
        self.written += written
        return written

    async def close(self) -> None:
        await self._client.aclose()
