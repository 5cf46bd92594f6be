"""The state table's stores: Faust's RocksDB and memory stores with the two
calls the worker's committer needs (docs/reliability.md) — read a key in a
given partition, and write a batch of a partition's states together with the
changelog offset they reach, in one atomic RocksDB write batch.

Faust picks a table's store by URL scheme from the ``faust.stores`` entry
points; pyproject.toml registers these two as ``userpulse-rocksdb://`` and
``userpulse-memory://``, and the worker maps ``USERPULSE_STORE`` (``rocksdb://``
or ``memory://``) onto them (:func:`store_url`). Faust's own recovery, standby
replicas and rebalancing use the stores exactly as they use Faust's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import rocksdict
from faust.stores import memory, rocksdb
from faust.types import TP

#: ``USERPULSE_STORE`` → the store URL the worker gives Faust
STORE_URLS = {"rocksdb://": "userpulse-rocksdb://", "memory://": "userpulse-memory://"}


def store_url(setting: str) -> str:
    """The Faust store URL for the ``USERPULSE_STORE`` value ``setting``."""
    return STORE_URLS[setting]


class BatchStore(Protocol):
    """What the committer asks of a store."""

    def get_in(self, partition: int, key: bytes) -> bytes | None: ...

    def write_batch(
        self, tp: TP, writes: Mapping[bytes, bytes | None], changelog_offset: int
    ) -> None: ...

    def items_in(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]: ...

    def offset_in(self, partition: int) -> int | None: ...


class RocksStore(rocksdb.Store):
    """Faust's RocksDB store (one database per partition), read and written
    by partition number instead of through Faust's current event. Always on
    the rocksdict driver (faust-streaming's ``rocksdict`` extra, a dependency
    of userpulse)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, driver="rocksdict", **kwargs)  # type: ignore[arg-type]

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """``key``'s stored value in ``partition``'s database (None: absent)."""
        value: bytes | None = self._db_for_partition(partition).get(key)
        return value

    def write_batch(
        self, tp: TP, writes: Mapping[bytes, bytes | None], changelog_offset: int
    ) -> None:
        """Every value of ``writes`` (None: delete the key) and the changelog
        offset they reach (``tp`` is the changelog's topic partition), in one
        atomic write: after a crash the database holds all of it or none."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.offset_key, str(changelog_offset).encode())
        self._db_for_partition(tp.partition).write(batch)

    def items_in(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (key, value) of ``partition``'s database, in key
        order, after the key ``after`` (None: from the first)."""
        db = self._db_for_partition(partition)
        out: list[tuple[bytes, bytes]] = []
        for key, value in db.items(from_key=after) if after is not None else db.items():
            if key == after or key == self.offset_key:
                continue
            out.append((key, value))
            if len(out) >= limit:
                break
        return out

    def offset_in(self, partition: int) -> int | None:
        """The changelog offset ``partition``'s database reaches (None: empty)."""
        raw = self._db_for_partition(partition).get(self.offset_key)
        return int(raw) if raw is not None else None


class MemoryStore(memory.Store[bytes, bytes]):
    """Faust's memory store with the same calls (nothing survives a restart:
    every start recovers the whole changelog). One dict for every partition:
    :meth:`items_in` yields all of them, and :meth:`offset_in` knows only the
    offsets this process wrote."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._offsets: dict[int, int] = {}

    def items_in(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.data if after is None or k > after)[:limit]
        return [(k, self.data[k]) for k in keys]

    def offset_in(self, partition: int) -> int | None:
        return self._offsets.get(partition)

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self.data.get(key)
        return value

    def write_batch(
        self, tp: TP, writes: Mapping[bytes, bytes | None], changelog_offset: int
    ) -> None:
        data = self.data
        for key, value in writes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._offsets[tp.partition] = changelog_offset
