"""The Redis profile projection: a hash per user plus index sets, written in batches.

The agent only *stages* an operation (a dict write, never I/O): a user's
complete profile with its index memberships (:meth:`RedisProjection.stage`)
or the user's erasure (:meth:`RedisProjection.erase`). A timer flushes what is
staged in pipelines of Lua scripts, one script per user, each atomic:

- **Coalesced**: only the newest staged operation of a user is written.
- **Idempotent**: the script compares the operation's version with the
  stored one (the hash's ``version`` field, or the tombstone an erasure
  leaves) and refuses anything not newer, so redelivery or a replay never
  moves a profile — or its index memberships — backwards, and never
  resurrects an erased user.
- **Non-blocking**: when Redis is down the flush fails, the operations stay
  staged (a newer one staged meanwhile wins), and the projection converges
  once Redis answers again; the stream is never blocked.

The keys are those of :mod:`agents.redis.keys`;
:class:`~agents.redis.profiles.ProfileReader` reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agents.redis.keys import (
    INDEX_FIELD_PREFIX,
    TOMBSTONE_TTL_S,
    environment_key,
    profile_key,
    projected_key,
    tombstone_key,
)

logger = logging.getLogger(__name__)

# One user operation, atomic. KEYS[1] = profile hash, KEYS[2] = tombstone.
# ARGV[1] = 'w' (write) or 'e' (erase), ARGV[2] = version, ARGV[3] = key
# prefix, ARGV[4] = user id, then
#   write: ARGV[5] = JSON [dimension, value, ...], ARGV[6] = JSON [field, value, ...]
#   erase: ARGV[5] = the tombstone's TTL in seconds
# (JSON keeps the command short: packing ~40 arguments per user costs the
# client more than decoding costs Redis.) Returns 1 when applied, 0 when
# refused as stale.
_APPLY = """
local version = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= version then return 0 end
local erased = redis.call('GET', KEYS[2])
if erased and tonumber(erased) >= version then return 0 end

local prefix, user = ARGV[3], ARGV[4]
local old = {}
if current then
  local flat = redis.call('HGETALL', KEYS[1])
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 4) == 'idx:' then old[string.sub(flat[i], 5)] = flat[i + 1] end
  end
end
local function leave(dim, value)
  local set = prefix .. 'idx:' .. dim .. ':' .. value
  redis.call('SREM', set, user)
  if redis.call('SCARD', set) == 0 then redis.call('SREM', prefix .. 'idxvals:' .. dim, value) end
end
local function join(dim, value)
  redis.call('SADD', prefix .. 'idx:' .. dim .. ':' .. value, user)
  if redis.call('SADD', prefix .. 'idxvals:' .. dim, value) == 1 then
    redis.call('SADD', prefix .. 'idxdims', dim)
  end
end

if ARGV[1] == 'e' then
  for dim, value in pairs(old) do leave(dim, value) end
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
  return 1
end

local pairs_ = cjson.decode(ARGV[5])
local new = {}
for i = 1, #pairs_, 2 do new[pairs_[i]] = pairs_[i + 1] end
for dim, value in pairs(old) do
  if new[dim] ~= value then leave(dim, value) end
end
local fields = cjson.decode(ARGV[6])
fields[#fields + 1] = 'version'
fields[#fields + 1] = ARGV[2]
for dim, value in pairs(new) do
  if old[dim] ~= value then join(dim, value) end
  fields[#fields + 1] = 'idx:' .. dim
  fields[#fields + 1] = value
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
if erased then redis.call('DEL', KEYS[2]) end
return 1
"""


# A partition's projected changelog offset, never moved back. Created only by
# a worker that has just compared every state of the partition with Redis
# (ARGV[2] = '1'); otherwise a missing key means Redis lost its data
# (restarted empty, flushed) and the offset is not written: the worker
# compares the partition again. KEYS[1] = the offset's key; ARGV[1] = the
# offset. Returns 1 set or kept, 0 missing.
_MARK = """
local current = redis.call('GET', KEYS[1])
if not current and ARGV[2] ~= '1' then return 0 end
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Behind:
    """A user's state as the changelog holds it, to compare with Redis."""

    user_id: str
    revision: int
    erased: bool


@dataclass(frozen=True, slots=True)
class _Op:
    """A staged operation: a profile write, or an erasure when ``fields`` is None."""

    version: int
    fields: Mapping[str, str] | None
    indexes: Mapping[str, str | None]


class RedisProjection:
    """Coalescing, idempotent, non-blocking writer of user profiles and their indexes."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        *,
        max_batch: int = 2000,
        tombstone_ttl_s: int = TOMBSTONE_TTL_S,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._max_batch = max_batch
        self._tombstone_ttl = str(tombstone_ttl_s)
        self._staged: dict[str, _Op] = {}
        self._script = client.register_script(_APPLY)
        self._mark = client.register_script(_MARK)
        #: partition → the projected changelog offset last written
        self._marked: dict[int, int] = {}
        #: partitions whose offset key was missing (Redis lost its data): their
        #: profiles must be compared again (the worker takes them from here)
        self.lost: set[int] = set()
        self._down_since: float | None = None
        #: Profile hashes written since start.
        self.written = 0
        #: Erasures applied since start.
        self.erased = 0
        #: Operations Redis refused because a newer version was already there.
        self.stale_skipped = 0
        #: flushes (or their parts) Redis did not apply, kept and retried
        self.failures = 0

    @classmethod
    def from_url(cls, url: str, key_prefix: str, *, max_batch: int = 2000) -> RedisProjection:
        client = aioredis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10
        )
        return cls(client, key_prefix, max_batch=max_batch)

    @property
    def pending(self) -> int:
        """Users with an operation staged and not yet written."""
        return len(self._staged)

    def stage(
        self,
        user_id: str,
        version: int,
        fields: Mapping[str, str],
        indexes: Mapping[str, str | None],
    ) -> None:
        """Queue ``user_id``'s complete profile ``fields`` and index memberships.

        ``indexes`` maps a dimension (stage, health, segment, tier) to the
        user's value, or to None (or "") for no membership in that dimension.
        The written hash holds exactly ``fields`` plus ``version`` and an
        ``idx:{dimension}`` field per membership. A newer staged operation of
        the user replaces an older one.
        """
        for name in fields:
            if name.startswith(INDEX_FIELD_PREFIX):
                raise ValueError(f"profile field {name!r}: the idx: prefix is reserved")
        for dimension in indexes:
            if not dimension or ":" in dimension:
                raise ValueError(f"index dimension {dimension!r} must be non-empty, without ':'")
        self._put(user_id, _Op(version, fields, indexes))

    def erase(self, user_id: str, version: int) -> None:
        """Queue the erasure of ``user_id``: the hash and every membership go,
        a tombstone refuses any operation with a version up to ``version``.
        Coalesced with :meth:`stage`: the higher version wins."""
        self._put(user_id, _Op(version, None, {}))

    def _put(self, user_id: str, op: _Op) -> None:
        current = self._staged.get(user_id)
        if current is None or current.version <= op.version:
            self._staged[user_id] = op

    def _call(self, user_id: str, op: _Op) -> tuple[list[str], list[str | int | bytes]]:
        keys = [profile_key(self._prefix, user_id), tombstone_key(self._prefix, user_id)]
        args: list[str | int | bytes] = [
            "w" if op.fields is not None else "e",
            op.version,
            self._prefix,
            user_id,
        ]
        if op.fields is None:
            args.append(self._tombstone_ttl)
            return keys, args
        memberships = [x for d, v in op.indexes.items() if v for x in (d, v)]
        fields = [x for n, v in op.fields.items() if n != "version" for x in (n, v)]
        args += [orjson.dumps(memberships), orjson.dumps(fields)]
        return keys, args

    async def flush(
        self,
        now: float,
        marks: Mapping[int, int] | None = None,
        created: frozenset[int] = frozenset(),
    ) -> int:
        """Apply what is staged, in pipelines of ``max_batch`` scripts; return
        how many operations (profile writes and erasures) were applied.

        ``marks`` (partition → changelog offset) says that every state of a
        partition up to that offset had its profile staged by now: once all of
        this flush is applied, the offsets are written (:func:`projected_key`)
        — a worker taking the partition over later knows what is missing. A
        partition's key is created only when it is in ``created`` (compared
        in full); a missing one is added to :attr:`lost` instead.

        What is staged during the flush waits for the next one. On a Redis
        error the unapplied operations stay staged (a newer one staged
        meanwhile wins) and the error is logged once per outage.
        """
        items = list(self._staged.items())
        self._staged = {}
        applied = 0
        error: Exception | None = None
        for start in range(0, len(items), self._max_batch):
            batch = items[start : start + self._max_batch]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for user_id, op in batch:
                        keys, args = self._call(user_id, op)
                        await self._script(keys=keys, args=args, client=pipe)
                    results: list[Any] = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                for user_id, op in items[start:]:
                    self._put(user_id, op)
                error = exc
                break
            for (user_id, op), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):  # e.g. OOM: keep it, retry later
                    self._put(user_id, op)
                    error = result
                elif result == 1:
                    applied += 1
                    if op.fields is None:
                        self.erased += 1
                    else:
                        self.written += 1
                else:
                    self.stale_skipped += 1
        if error is not None:
            self._failed(now, error)
            return applied
        if items:
            self._answered(now)
        if marks:
            await self._write_marks(now, marks, created)
        return applied

    def _failed(self, now: float, error: BaseException) -> None:
        self.failures += 1
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "Redis projection: write failed (%s); %d users' operations kept and retried",
                error,
                self.pending,
            )

    def _answered(self, now: float) -> None:
        if self._down_since is not None:
            logger.warning("Redis projection: Redis is back after %.1f s", now - self._down_since)
            self._down_since = None

    async def _write_marks(
        self, now: float, marks: Mapping[int, int], created: frozenset[int]
    ) -> None:
        changed = {p: o for p, o in marks.items() if self._marked.get(p, -2) < o or p in created}
        if not changed:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for partition, offset in changed.items():
                    create = "1" if partition in created else "0"
                    await self._mark(
                        keys=[projected_key(self._prefix, partition)],
                        args=[offset, create],
                        client=pipe,
                    )
                results: list[Any] = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(now, exc)
            return
        for (partition, offset), result in zip(changed.items(), results, strict=True):
            if result == 1:
                self._marked[partition] = offset
            else:
                self._lose(partition)

    def _lose(self, partition: int) -> None:
        self._marked.pop(partition, None)
        if partition not in self.lost:
            self.lost.add(partition)
            logger.warning(
                "Redis projection: Redis lost partition %d's profiles (its key %s is gone); "
                "they are written again",
                partition,
                projected_key(self._prefix, partition),
            )

    async def check(self, partitions: list[int]) -> None:
        """Add to :attr:`lost` the partitions whose offset key is gone (Redis
        emptied while the worker was idle)."""
        for partition, offset in (await self.projected(partitions)).items():
            if offset is None and partition in self._marked:
                self._lose(partition)

    async def projected(self, partitions: list[int]) -> dict[int, int | None]:
        """Each partition's projected changelog offset (None: not recorded,
        or Redis emptied since)."""
        if not partitions:
            return {}
        keys = [projected_key(self._prefix, p) for p in partitions]
        values = await self._client.mget(keys)
        return {
            p: int(v) if v is not None else None for p, v in zip(partitions, values, strict=True)
        }

    async def behind(self, states: list[Behind]) -> list[int]:
        """The indexes of ``states`` whose profile in Redis is older than the
        state (or missing), or whose erasure is not recorded: one pipelined
        round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.hget(profile_key(self._prefix, state.user_id), "version")
                pipe.get(tombstone_key(self._prefix, state.user_id))
            answers: list[Any] = await pipe.execute()
        out = []
        for i, state in enumerate(states):
            version, erased = answers[2 * i], answers[2 * i + 1]
            if state.erased:
                done = erased is not None and int(erased) >= state.revision
            else:
                done = version is not None and int(version) >= state.revision
                done = done or (erased is not None and int(erased) >= state.revision)
            if not done:
                out.append(i)
        return out

    async def claim(self, marker: bytes) -> None:
        """Set the prefix's environment marker unless it is there (``SET NX``;
        agents/environment.py sets it at start): after Redis lost its data."""
        await self._client.set(environment_key(self._prefix), marker, nx=True)

    async def ping(self) -> None:
        """Ask Redis for an answer (the worker's readiness probe)."""
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
