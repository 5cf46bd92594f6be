"""Synchronous reads of the profile projection: a user's profile, and the
users per stage, health, segment and tier from the index sets — for the CLI
and notification services."""

from __future__ import annotations

from typing import Any, cast

import redis

from agents.redis.keys import (
    DIMENSIONS,
    index_dimensions_key,
    index_key,
    index_values_key,
    profile_key,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ProfileReader:
    """Synchronous reads of the projection, for the CLI and notification services.

    Works with a client made with or without ``decode_responses``.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def profile(self, user_id: str) -> dict[str, str]:
        """The user's profile hash (empty when there is none)."""
        raw = cast(dict[Any, Any], self._client.hgetall(profile_key(self._prefix, user_id)))
        return {_text(k): _text(v) for k, v in raw.items()}

    def dimensions(self) -> list[str]:
        """:data:`DIMENSIONS`, then any other indexed dimension, sorted."""
        known = cast(set[Any], self._client.smembers(index_dimensions_key(self._prefix)))
        others = sorted({_text(d) for d in known} - set(DIMENSIONS))
        return [*DIMENSIONS, *others]

    def counts(self) -> dict[str, dict[str, int]]:
        """Users per dimension and value: ``{"stage": {"activated": 12, …}, …}``.

        Every dimension of :meth:`dimensions` is present (empty when no user
        has a value); values are sorted and only those with users appear.
        """
        dimensions = self.dimensions()
        pipe = self._client.pipeline(transaction=False)
        for dimension in dimensions:
            pipe.smembers(index_values_key(self._prefix, dimension))
        values = [sorted(_text(v) for v in found) for found in pipe.execute()]
        pipe = self._client.pipeline(transaction=False)
        for dimension, names in zip(dimensions, values, strict=True):
            for value in names:
                pipe.scard(index_key(self._prefix, dimension, value))
        sizes = iter(pipe.execute())
        counts: dict[str, dict[str, int]] = {}
        for dimension, names in zip(dimensions, values, strict=True):
            row = {value: int(next(sizes)) for value in names}
            counts[dimension] = {value: n for value, n in row.items() if n > 0}
        return counts

    def count(self, dimension: str, value: str) -> int:
        """How many users have ``dimension`` = ``value``."""
        return int(self._client.scard(index_key(self._prefix, dimension, value)))

    def members(self, dimension: str, value: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` user ids with ``dimension`` = ``value``, sorted.

        Read with SSCAN (never blocks Redis); when the set holds more than
        ``limit`` users, which ones are returned is up to Redis.
        """
        key = index_key(self._prefix, dimension, value)
        found: set[str] = set()
        cursor: Any = 0
        while len(found) < limit:
            cursor, chunk = cast(
                tuple[Any, list[Any]],
                self._client.sscan(key, cursor, count=max(100, min(limit, 1000))),
            )
            found.update(_text(m) for m in chunk)
            if int(cursor) == 0:
                break
        return sorted(found)[:limit]
