"""benchmarks.run --from-results: the summary made from result files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from benchmarks import run


def write(directory: Path, name: str, doc: dict[str, Any]) -> None:
    (directory / f"{name}.json").write_bytes(orjson.dumps(doc))


def head(sizes: dict[str, Any], date: str) -> dict[str, Any]:
    return {
        "benchmark": "benchmarks/run.py",
        "date": date,
        "sizes": sizes,
        "machine": {"nproc": 2},
        "kafka_version": "4.1.1",
        "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [2.0, 2.0, 2.0],
    }


def test_compose_takes_each_step_from_its_file_and_names_the_missing(tmp_path: Path) -> None:
    full = dict(run.FULL)
    write(
        tmp_path,
        "ceiling",
        head(full, "d1") | {"read_decode": {"events_per_s": 200_000}},
    )
    write(tmp_path, "pipeline", head(full, "d2") | {"events_per_s": 3_000})
    # run again apart: its own sizes, date and load
    apart = head({"events": 2_000_000, "users": 1_000_000}, "d9") | {
        "loadavg_end": [0.5, 0.5, 0.5],
        "local": {"users_per_s": 40_000},
        "changelog": {"users_per_s": 2_000},
    }
    write(tmp_path, "recovery", apart)

    summary = run.compose(tmp_path)

    assert summary["sizes"] == full and summary["quick"] is False
    assert summary["date"] == "d1"
    assert summary["composed_from"]["recovery"]["date"] == "d9"
    assert summary["loadavg_end"] == [0.5, 0.5, 0.5]  # the last step's
    assert set(summary["errors"]) == {"scaling", "latency", "state"}
    by_name = {t["target"]: t for t in summary["targets"]}
    assert by_name["pipeline share of the Python ceiling"]["measured"] == 3_000 / 200_000
    assert by_name["pipeline throughput, 1 worker"]["met"] is False
    assert by_name["recovery from the changelog"]["measured"] == 2_000
    assert by_name["p99 ingest → trigger at half load"]["met"] is None  # not measured


def test_compose_reports_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "pipeline.json").write_text("{not json")
    summary = run.compose(tmp_path)
    assert "not JSON" in summary["errors"]["pipeline"]
    assert "sizes" not in summary
