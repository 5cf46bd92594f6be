"""Hostile records through a real worker (issue #15): every way a record can
break the event contract, and nasty records that keep it, amid the
generator's valid events (tests/faults/hostile.py).

The worker must apply every valid record and dead-letter every other one
with its code — the verifier's every view against the engine's reading of
the input topic, and the dead-letter topic's codes against the generator's
labels — write no Redis key outside its prefix, never crash, and stop
cleanly. The short run sends about 5,000 hostile records, ``FAULTS=full``
about 100,000; in the mix's phases (identity merges and what follows them
wait for the worker to commit the phase before), at up to ~4,000 records/s.

The verifier's back-test is given the wall clock of the run's start and the
worker's skew (``verify(now_ms=…)``), so it rejects what lies beyond the
wall clock as the worker does: timestamps a day or a century ahead are
checked too, not only those beyond any clock (over 2^63 ms).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
import redis

from agents.kafka.admin import ensure_topics
from agents.kafka.deadletters import DLQ_HEADERS, TRUNCATED_HEADER, dlq_topic
from agents.settings import Settings
from benchmarks.generator import generate
from streams import topics
from streams.contract import REJECTION_CODES, Limits
from streams.errors import EventError
from streams.events import parse_event
from tests.e2e.conftest import Worker, counters, wait_for
from tests.faults.conftest import SteadyProducer, committed_everything, scale
from tests.faults.hostile import APPLIED, WALL_CLOCK_FUTURE_MS, Mix, Record, hostile_mix
from tests.faults.verifier import Report, read_to_end, verify

NOW_MS = 1_767_225_600_000  # the generator's anchor: 2026-01-01T00:00:00Z
HOSTILE = scale(5_000, 100_000)
VALID = scale(3_000, 30_000)
USERS = scale(150, 1_500)
#: the producer's pace: up to ~4,000 records/s, about what a worker applies
STEP, PAUSE_S = 400, 0.1
_CODE, _PARTITION, _OFFSET = DLQ_HEADERS[0], DLQ_HEADERS[4], DLQ_HEADERS[5]


def _outcome(key: bytes | None, value: bytes | None, now_ms: int, limits: Limits) -> str:
    """What the worker's engine does with a record: its rejection code, or APPLIED."""
    try:
        event = parse_event(value or b"", now_ms=now_ms, limits=limits)
    except EventError as error:
        return error.code
    return APPLIED if key == event.key.encode() else "key_mismatch"


def test_the_labels_are_the_engines() -> None:
    """The generator's labels are what the engine decides, and every
    rejection code of the contract is among them."""
    wall = time.time_ns() // 1_000_000
    data = generate(300, 20, seed=29, partitions=4, now_ms=NOW_MS)
    mix = hostile_mix(data, 2_000, seed=31, wall_ms=wall)
    limits = Limits()
    wrong = Counter(
        (r.kind, r.expect, got)
        for r in mix.records
        if (got := _outcome(r.key, r.value, wall, limits)) != r.expect
    )
    assert not wrong, wrong
    assert set(mix.by_expect()) == {*REJECTION_CODES, APPLIED}
    assert mix.records == hostile_mix(data, 2_000, seed=31, wall_ms=wall).records  # seeded


def _send(settings: Settings, records: list[Record], worker: Worker) -> None:
    """Send ``records`` at the producer's pace; wait until the worker has
    committed them and every internal message they caused."""
    # a null key or value is what the test sends, whatever the producer's types say
    keys = cast(list[bytes], [r.key for r in records])
    values = cast(list[bytes], [r.value for r in records])
    producer = SteadyProducer(settings, keys, values, step=STEP, pause_s=PAUSE_S).start()
    try:
        producer.wait(scale(240, 1_200))
    finally:
        producer.close()
    names = [settings.topic(topics.USER_EVENTS), settings.topic(topics.DERIVED)]
    wait_for(
        lambda: all(committed_everything(settings, name) for name in names),
        scale(240, 1_200),
        worker,
        f"every record of phase {records[0].phase} committed",
    )


def _dead_letters(settings: Settings) -> tuple[Counter[str], int]:
    """The dead-letter topic's codes, one per source record, and how many of
    those records were dead-lettered by reference (too big to carry)."""
    codes: dict[tuple[bytes, bytes], str] = {}
    by_reference: set[tuple[bytes, bytes]] = set()
    for record in read_to_end(settings.kafka_bootstrap, [dlq_topic(settings)]):
        h = record.headers
        if _PARTITION in h:
            source = (h[_PARTITION], h[_OFFSET])
            codes[source] = h[_CODE].decode()
            if h.get(TRUNCATED_HEADER) == b"true":
                by_reference.add(source)
    return Counter(codes.values()), len(by_reference)


def _keys(settings: Settings) -> set[bytes]:
    client = redis.Redis.from_url(settings.redis_url.reveal())
    try:
        return set(client.scan_iter(count=1_000))
    finally:
        client.close()


def _summary(mix: Mix, elapsed_s: float, dead: Counter[str]) -> str:
    lines = [
        f"{len(mix.records):,} records ({len(mix.hostile()):,} hostile) in {elapsed_s:.0f} s",
        "hostile by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(mix.by_kind().items())),
        "dead letters by code: " + ", ".join(f"{c} {n}" for c, n in sorted(dead.items())),
    ]
    return "\n".join(lines)


@pytest.mark.e2e
def test_hostile_records_are_applied_or_dead_lettered(
    settings: Settings,
    tmp_path: Path,
    record_report: list[Report],
) -> None:
    settings = replace(settings, clock="stream")
    wall = time.time_ns() // 1_000_000
    assert wall > NOW_MS + WALL_CLOCK_FUTURE_MS  # the valid events are in the past
    limits = Limits(
        max_bytes=settings.max_event_bytes, max_future_skew_ms=settings.max_future_skew_s * 1000
    )
    data = generate(VALID, USERS, seed=29, partitions=settings.partitions, now_ms=NOW_MS)
    mix = hostile_mix(data, HOSTILE, seed=31, wall_ms=wall, limits=limits)
    want = Counter(r.expect for r in mix.records if r.expect != APPLIED)

    ensure_topics(settings)
    before = _keys(settings)  # other tests of the session share this Redis
    log = tmp_path / "worker.log"
    worker = Worker(settings, log)
    started = time.monotonic()
    try:
        wait_for(lambda: "batches" in counters(settings), 90, worker, "the worker's web port")
        for phase in (1, 2, 3, 4):
            _send(settings, mix.phase(phase), worker)
        elapsed = time.monotonic() - started
        assert worker.proc.poll() is None, worker.tail()  # never crashed
        seen = counters(settings)
    finally:
        stopped = worker.stop()
    assert stopped == 0, worker.tail()

    report = verify(
        settings,
        f"{len(mix.hostile()):,} hostile records through a worker",
        data_dir=settings.data_dir,
        now_ms=wall,
    )
    record_report.append(report)
    dead, by_reference = _dead_letters(settings)
    print(_summary(mix, elapsed, dead), f"({by_reference} by reference)")

    assert not report.failures(), report.failures()
    views = {view.name: view for view in report.views}
    assert views["dead letters"].expected == want.total()
    assert views["changelog"].expected > USERS  # the nasty users are users too
    assert dead == want
    # the ~1 MB records: with their headers too big for the producer as they are
    assert by_reference == mix.by_kind()["too_large/999k"] > 0
    assert seen["dead_letters"] >= want.total()
    prefix = settings.redis_key_prefix.encode()
    strays = sorted(k for k in _keys(settings) - before if not k.startswith(prefix))
    assert not strays, f"Redis keys outside {prefix!r}: {strays[:10]}"
    tracebacks = re.findall(r"^.*(?:Traceback|crashed).*$", log.read_text(), re.MULTILINE)
    assert not tracebacks, tracebacks[:5]
