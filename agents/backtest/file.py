"""A back-test of a history file: ``userpulse backtest FILE``'s run.

The file is read as ``userpulse replay`` reads a dataset, or in file order
as JSON Lines (:func:`agents.files.jsonl.history_rows`); every event goes
through a :class:`~agents.backtest.run.Backtest`, each rejected row or event
is counted by its code, every trigger can be written as a row of ``--csv``,
and the progress is reported about every second.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from agents.backtest.report import CSV_COLUMNS, BacktestProgress, BacktestReport, csv_row
from agents.backtest.run import DEFAULT_PARTITIONS, Backtest, BacktestError
from agents.files.jsonl import JSONL, history_rows
from agents.files.rows import (
    DEFAULT_MAX_LATENESS_S,
    EXAMPLE_REJECTIONS,
    PROGRESS_INTERVAL_S,
    ReadStats,
    Rejection,
)
from streams.batch import DeadLetter
from streams.churn import ChurnModel
from streams.datasets import OrderError
from streams.errors import EventError
from streams.policy import DEFAULT_POLICY, Policy


def backtest_file(
    path: str | Path,
    policy: Policy = DEFAULT_POLICY,
    layout: str = "auto",
    limit: int | None = None,
    until_ms: int | None = None,
    csv_path: str | Path | None = None,
    progress: Callable[[BacktestProgress], None] | None = None,
    *,
    presorted: bool | None = None,
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S,
    keep_triggers: bool = False,
    churn_model: ChurnModel | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    lateness_ms: int | None = None,
) -> BacktestReport:
    """Back-test ``policy`` on the history at ``path`` (``.csv``, ``.csv.gz``,
    ``.jsonl``, ``.jsonl.gz``, ``-``).

    ``layout``, ``limit`` (rows), ``presorted`` and ``max_lateness_s`` read
    a dataset as ``userpulse replay`` does (docs/replay.md); JSON Lines are
    read in file order (:mod:`agents.files.jsonl`). Events after ``until_ms``
    are left out (in a time-sorted dataset nothing after the first is
    read); the timers run to ``until_ms`` or to each partition's stream time.
    Every trigger is written to ``csv_path`` (:data:`CSV_COLUMNS`) when given;
    ``progress`` is called about every second; ``churn_model``,
    ``partitions`` and ``lateness_ms`` as for :func:`~agents.backtest.run.backtest`.

    Raises :class:`BacktestError` (or another ``UserpulseError``) for an
    unreadable file, an unknown layout or presorted input out of order.
    """
    started = time.monotonic()
    stats = ReadStats()
    by_code: Counter[str] = Counter()
    examples: list[Rejection] = []
    mapped = 0
    out: IO[str] | None = None
    if csv_path is not None:
        try:
            out = open(csv_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise BacktestError(f"cannot write {csv_path}: {exc.strerror or exc}") from None
    writer = csv.writer(out) if out is not None else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    engine = Backtest(
        policy,
        (lambda t: writer.writerow(csv_row(t))) if writer is not None else None,
        keep_triggers=keep_triggers,
        churn_model=churn_model,
        partitions=partitions,
        lateness_ms=lateness_ms,
    )
    meter = _Meter(progress, stats, engine, by_code, started)
    stats.tick = meter.maybe

    def reject(rejection: Rejection) -> None:
        by_code[rejection.error.code] += 1
        if len(examples) < EXAMPLE_REJECTIONS:
            examples.append(rejection)

    def on_dead_letter(letter: DeadLetter, origin: Any) -> None:
        line, row, doc = origin
        reject(Rejection(line, "validate", letter.error, row, doc))

    engine.on_dead_letter = on_dead_letter
    try:
        rows = history_rows(
            path,
            layout,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            limit=limit,
            stats=stats,
        )
        past_until = False
        for line, row, result in rows:
            if isinstance(result, EventError):
                reject(Rejection(line, "map", result, row))
                continue
            for item in result:
                if until_ms is not None and item.timestamp_ms > until_ms:
                    if stats.layout == JSONL:
                        continue  # file order: a later line may be earlier
                    past_until = True  # sorted by time: the rest is later still
                    break
                mapped += 1
                doc = item.doc
                key = doc.get("user_id") or doc.get("anonymous_id")
                raw_key = key.encode() if isinstance(key, str) else None
                engine.feed_raw(raw_key, orjson.dumps(doc), origin=(line, row, doc))
                if not mapped & 255:
                    meter.maybe()
            if past_until:
                break
        stats.phase = "timers"
        end = engine.finish(until_ms)
    except OrderError as exc:
        raise BacktestError(
            f"{path}: {exc}. The input is not sorted by event time: rerun with --no-presorted "
            "(sorts in memory) or a larger --max-lateness."
        ) from None
    finally:
        if out is not None:
            out.close()
    stats.phase = "done"
    if time.monotonic() - started >= PROGRESS_INTERVAL_S:
        meter.now()
    return engine.report(
        end,
        time.monotonic() - started,
        source=str(path),
        layout=stats.layout,
        presorted=stats.presorted,
        rows=stats.rows,
        mapped=mapped,
        rejected_by_code=by_code,
        examples=examples,
    )


class _Meter:
    """Calls ``report`` about every second with what has been done."""

    def __init__(
        self,
        report: Callable[[BacktestProgress], None] | None,
        stats: ReadStats,
        engine: Backtest,
        rejected: Counter[str],
        started: float,
    ) -> None:
        self.report = report
        self.stats = stats
        self.engine = engine
        self.rejected = rejected
        self.started = self.last = started
        self.last_events = 0

    def maybe(self) -> None:
        if self.report is not None and time.monotonic() - self.last >= PROGRESS_INTERVAL_S:
            self.now()

    def now(self) -> None:
        if self.report is None:
            return
        now = time.monotonic()
        events = self.engine.events
        rate = (events - self.last_events) / (now - self.last) if now > self.last else 0.0
        self.last, self.last_events = now, events
        self.report(
            BacktestProgress(
                self.stats.phase,
                self.stats.rows,
                events,
                self.engine.trigger_count,
                sum(self.rejected.values()),
                now - self.started,
                rate,
            )
        )
