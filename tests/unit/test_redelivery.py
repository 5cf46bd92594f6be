"""Exact redelivery (docs/reliability.md): a state carries the offset of the
last record applied to it, per input topic, so a record delivered again after
a crash — however many of the user's records came since the last commit — is
recognised and applied once, not twice.
"""

from __future__ import annotations

import orjson

from streams.batch import Batch, Record
from streams.codec import _SCALARS, decode_state, encode_state
from streams.contract import Limits
from streams.derived import ReferralCredit, encode_derived
from streams.engine import Engine
from streams.events import Event
from streams.partition import Partition
from streams.userstate import DEDUP_WINDOW, UserState
from tests.unit.test_state_properties import T0

NOW = 2**62
LIMITS = Limits(max_future_skew_ms=NOW)


def busy_user(n: int, user: str = "busy") -> list[Record]:
    """``n`` events of one user, more than the window of recent event ids."""
    events = [
        Event(f"{user}-{i}", "product_viewed", T0 + i * 1000, user_id=user,
              properties={"product_id": f"p{i % 7}"})
        for i in range(n)
    ]  # fmt: skip
    return [Record(user.encode(), orjson.dumps(e.to_dict()), 100 + i) for i, e in enumerate(events)]


class Table:
    """The stored states, encoded as the worker stores them."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}

    def load(self, key: bytes) -> UserState | None:
        raw = self.rows.get(key)
        return decode_state(raw) if raw is not None else None

    def store(self, batch: Batch) -> None:
        for key, state in batch.writes.items():
            self.rows[key] = encode_state(state)


def test_a_busy_users_records_delivered_again_are_applied_once() -> None:
    engine, table = Engine(limits=LIMITS), Table()
    records = busy_user(5 * DEDUP_WINDOW)
    first = engine.run(Partition(0), records, table.load, now_ms=NOW)
    table.store(first)
    state = table.load(b"busy")
    assert state is not None and state.event_count == 5 * DEDUP_WINDOW
    assert state.events_offset == records[-1].offset

    # the worker crashed before the commit: every record comes again
    again = engine.run(Partition(0), records, table.load, now_ms=NOW)
    assert again.redelivered == len(records)
    assert again.redelivered_keys == [b"busy"] * len(records)
    assert again.events == 0 and not again.writes and not again.triggers


def test_a_redelivered_prefix_is_skipped_and_the_new_records_applied() -> None:
    engine, table = Engine(limits=LIMITS), Table()
    records = busy_user(3 * DEDUP_WINDOW)
    table.store(engine.run(Partition(0), records[:30], table.load, now_ms=NOW))
    # redelivered from offset 110 on (the last commit), then new records
    batch = engine.run(Partition(0), records[10:], table.load, now_ms=NOW)
    assert batch.redelivered == 20
    assert batch.events == len(records) - 30
    state = batch.writes[b"busy"]
    assert state.event_count == len(records) and state.events_offset == records[-1].offset


def test_without_offsets_only_the_window_of_event_ids_remains() -> None:
    """What the offsets fix: a state without them (an older layout, read as
    -1) applies again every record older than the window of recent ids."""
    engine, table = Engine(limits=LIMITS), Table()
    records = busy_user(3 * DEDUP_WINDOW)
    table.store(engine.run(Partition(0), records, table.load, now_ms=NOW))
    state = table.load(b"busy")
    assert state is not None
    doc = orjson.loads(encode_state(state))
    scalars = 1 + len(_SCALARS)
    # version 3: no offsets, no erased_ms, no erasures
    layout_3 = [3, *doc[1 : scalars - 4], *doc[scalars:]]
    table.rows[b"busy"] = orjson.dumps(layout_3)
    old = table.load(b"busy")
    assert old is not None and old.events_offset == -1 and old.event_count == len(records)
    batch = engine.run(Partition(0), records, table.load, now_ms=NOW)
    # the oldest records are no longer in the window; each one applied again
    # pushes the next ones out of it: every record counts twice
    assert batch.redelivered == 0
    assert batch.writes[b"busy"].event_count == 2 * len(records)


def test_a_redelivered_internal_message_is_skipped_by_its_offset() -> None:
    engine, table = Engine(limits=LIMITS), Table()
    signup = Event("r-1", "signed_up", T0, user_id="referrer")
    table.store(
        engine.run(
            Partition(0),
            [Record(b"referrer", orjson.dumps(signup.to_dict()), 0)],
            table.load,
            now_ms=NOW,
        )
    )
    credit = ReferralCredit("referrer", "friend", T0 + 1000, "f-1")
    record = Record(b"referrer", encode_derived(credit), 7, derived=True)
    first = engine.run(Partition(0), [record], table.load, now_ms=NOW)
    table.store(first)
    credited = table.load(b"referrer")
    assert credited is not None and credited.referral_count == 1
    assert credited.derived_offset == 7 and credited.events_offset == 0

    again = engine.run(Partition(0), [record], table.load, now_ms=NOW)
    assert again.redelivered == 1 and not again.writes
