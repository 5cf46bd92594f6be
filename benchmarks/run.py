"""The benchmark suite, as `make bench` runs it: brings up the local stack,
runs core (the engine alone, no I/O) → ceiling → pipeline → scaling →
latency (+ timer precision) → state → recovery with the sizes given, writes each benchmark's JSON, then
benchmarks/results/summary.json and the chart benchmarks/results/benchmarks.png,
and prints the targets with the measured figures beside them.

    .venv/bin/python -m benchmarks.run            # full size (a quiet machine, ~1 h 40 min)
    .venv/bin/python -m benchmarks.run --quick    # smoke run: small sizes, a few minutes
    .venv/bin/python -m benchmarks.run --from-results   # summary + chart from the result files

`--from-results` runs nothing: after one step was run again apart (e.g.
`python -m benchmarks.recovery`, which writes benchmarks/results/recovery.json),
it makes the summary, the chart and the targets table from the result files,
each keeping its own date, sizes and load average.

The stack is `agents.stack.local.Stack` configured by USERPULSE_STACK_* (a private
stack on other ports is a good idea on a shared machine); when this program
started it, it stops it at the end. Every topic, consumer group and Redis key
prefix of the run carries a unique tag and is deleted at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from agents.settings import StackSettings
from agents.stack.local import Stack
from benchmarks import ceiling, core, harness, latency, pipeline, recovery, scaling, state
from benchmarks.harness import Bench, BenchError, log

SUMMARY = harness.RESULTS_DIR / "summary.json"
CHART = harness.RESULTS_DIR / "benchmarks.png"

FULL = {
    "events": pipeline.DEFAULT_EVENTS,
    "users": pipeline.DEFAULT_USERS,
    "state_users": state.DEFAULT_USERS,
    "state_events": state.DEFAULT_EVENTS,
    "latency_seconds": 60.0,
}
QUICK = {
    "events": 50_000,
    "users": 5_000,
    "state_users": 20_000,
    "state_events": 40_000,
    "latency_seconds": 10.0,
}
#: the engine alone (benchmarks.core): its own sizes, runs per lateness
CORE_FULL = {"events": core.DEFAULT_EVENTS, "users": core.DEFAULT_USERS, "repeat": 3}
CORE_QUICK = {"events": 50_000, "users": 5_000, "repeat": 1}


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the figure measured for it (None: not measured)."""
    ceil = _get(summary, "ceiling", "read_decode", "events_per_s")
    pipe = _get(summary, "pipeline", "events_per_s")
    p99 = _get(summary, "latency", "ingest_to_trigger_ms", "p99")
    timer = _get(summary, "latency", "timer_precision", "deadline_to_emitted_ms", "p99")
    rocks = _get(summary, "state", "rocksdb_bytes_per_user_compacted") or _get(
        summary, "state", "rocksdb_bytes_per_user"
    )
    local = _get(summary, "recovery", "local", "users_per_s")
    from_log = _get(summary, "recovery", "changelog", "users_per_s")
    share = pipe / ceil if pipe and ceil else None
    engine = next(
        (r.get("events_per_s_median") for r in _get(summary, "core", "runs") or []
         if r.get("lateness_ms") is None),
        None,
    )  # fmt: skip
    rows = [
        ("the engine alone, one core (benchmarks.core)", "≥ 100,000 events/s", engine, lambda v: v >= 100_000, "{:,.0f} events/s"),
        ("pipeline share of the Python ceiling", "≥ 50 %", share, lambda v: v >= 0.5, "{:.1%}"),
        ("pipeline throughput, 1 worker", "≥ 50,000 events/s", pipe, lambda v: v >= 50_000, "{:,.0f} events/s"),
        ("p99 ingest → trigger at half load", "≤ 100 ms", p99, lambda v: v <= 100, "{:,.0f} ms"),
        ("timer precision p99 (deadline → emitted)", "≤ 1 s", timer, lambda v: v <= 1000, "{:,.0f} ms"),
        ("RocksDB state per user", "≤ 1 KiB", rocks, lambda v: v <= 1024, "{:,.0f} B"),
        ("recovery from local RocksDB", "≥ 100,000 users/s", local, lambda v: v >= 100_000, "{:,.0f} users/s"),
        ("recovery from the changelog", "≥ 100,000 users/s", from_log, lambda v: v >= 100_000, "{:,.0f} users/s"),
    ]  # fmt: skip
    out = []
    for name, target, value, ok, fmt in rows:
        out.append(
            {
                "target": name,
                "wanted": target,
                "measured": value,
                "measured_text": fmt.format(value) if value is not None else "not measured",
                "met": None if value is None else bool(ok(value)),
            }
        )
    return out


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def targets_table(rows: list[dict[str, Any]]) -> str:
    verdict = {True: "met", False: "NOT met", None: "—"}
    return harness.table(
        "Targets",
        ("target", "wanted", "measured", "verdict"),
        [(r["target"], r["wanted"], r["measured_text"], verdict[r["met"]]) for r in rows],
    )


def chart(summary: dict[str, Any], path: Path = CHART) -> Path:
    """Throughput vs ceiling, latency percentiles, recovery and state per user."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_tp, ax_lat), (ax_rec, ax_state) = axes

    ceil = _get(summary, "ceiling", "read_decode", "events_per_s")
    bars = [
        ("ceiling:\nread + decode", ceil, "#9e9e9e"),
        ("read +\nvalidate", _get(summary, "ceiling", "read_validate", "events_per_s"), "#bdbdbd"),
        ("pipeline\n1 worker", _get(summary, "pipeline", "events_per_s"), "#1f77b4"),
        (
            "pipeline\n2 workers",
            _get(summary, "scaling", "runs", "2", "events_per_s"),
            "#4f97d4",
        ),
    ]
    _bars(ax_tp, bars, "events/s (log scale)", "Throughput vs the Python ceiling", log=True)
    ax_tp.axhline(50_000, color="#d62728", ls="--", lw=1, label="target 50,000 events/s")
    if ceil:
        ax_tp.axhline(ceil / 2, color="#ff7f0e", ls=":", lw=1.5, label="50 % of ceiling")
    ax_tp.legend(loc="upper right", fontsize=8)

    lat = _get(summary, "latency", "ingest_to_trigger_ms") or {}
    timer = _get(summary, "latency", "timer_precision", "deadline_to_emitted_ms") or {}
    names = ["p50", "p90", "p99", "p99.9"]
    xs = range(len(names))
    width = 0.38
    ax_lat.bar(
        [x - width / 2 for x in xs],
        [lat.get(n) or 0 for n in names],
        width,
        label="ingest → trigger received",
        color="#2ca02c",
    )
    if timer:
        ax_lat.bar(
            [x + width / 2 for x in xs],
            [timer.get(n) or 0 for n in names],
            width,
            label="timer: deadline → emitted",
            color="#9467bd",
        )
    else:
        ax_lat.text(
            0.5, 0.92, "timer precision: not available in this build",
            transform=ax_lat.transAxes, ha="center", fontsize=9, color="#555",
        )  # fmt: skip
    ax_lat.set_xticks(list(xs), names)
    ax_lat.axhline(100, color="#d62728", ls="--", lw=1, label="target p99 ≤ 100 ms")
    if timer:
        ax_lat.axhline(1000, color="#9467bd", ls=":", lw=1.5, label="timer target p99 ≤ 1 s")
    rate = _get(summary, "latency", "offered_events_per_s")
    ax_lat.set_title(
        f"Latency at {rate:,} events/s offered (half load)" if rate else "Latency", fontsize=11
    )
    ax_lat.set_ylabel("ms")
    ax_lat.legend(loc="upper left", fontsize=8)

    users = _get(summary, "recovery", "users")
    rec = [
        ("(a) local RocksDB", _get(summary, "recovery", "local", "users_per_s"), "#17becf"),
        ("(b) changelog", _get(summary, "recovery", "changelog", "users_per_s"), "#8c564b"),
    ]
    _bars(
        ax_rec,
        rec,
        "users/s (log scale)",
        f"Recovery after SIGKILL ({users:,} users)" if users else "Recovery after SIGKILL",
        log=True,
    )
    ax_rec.axhline(100_000, color="#d62728", ls="--", lw=1, label="target 100,000 users/s")
    ax_rec.legend(loc="upper right", fontsize=8)

    st = summary.get("state") or {}
    per_user = [
        ("RocksDB\n(as left)", st.get("rocksdb_bytes_per_user"), "#1f77b4"),
        ("RocksDB\n(compacted)", st.get("rocksdb_bytes_per_user_compacted"), "#4f97d4"),
        ("changelog\nlatest record", _get(st, "changelog", "avg_latest_record_bytes"), "#8c564b"),
        ("Redis", st.get("redis_bytes_per_user"), "#d62728"),
    ]
    _bars(
        ax_state,
        per_user,
        "bytes per user",
        f"State per user ({st['users']:,} users)" if st.get("users") else "State per user",
    )
    ax_state.axhline(1024, color="#d62728", ls="--", lw=1, label="target RocksDB ≤ 1 KiB")
    ax_state.legend(loc="upper right", fontsize=8)

    sizes = summary.get("sizes", {})
    if summary.get("quick"):
        kind = "SMOKE RUN (small sizes)"
    elif all(sizes.get(k) == v for k, v in FULL.items()):
        kind = "full size"
    else:
        kind = "reduced sizes"
    apart = sorted(
        name
        for name, entry in summary.get("composed_from", {}).items()
        if entry.get("sizes") != sizes
    )
    if apart:  # a step run again apart: say so on the chart itself
        kind += f" ({', '.join(apart)} run apart)"
    m = summary.get("machine", {})
    fig.suptitle(
        f"userpulse benchmarks — {kind}: {sizes.get('events', 0):,} events / "
        f"{sizes.get('users', 0):,} users; state {sizes.get('state_users', 0):,} users\n"
        f"{m.get('nproc')} CPUs ({m.get('cpu_model')}), Python {m.get('python')}, "
        f"Kafka {summary.get('kafka_version')}, Redis {summary.get('redis_version')}; "
        f"load average {harness.load_text(summary.get('loadavg_start', []))} → "
        f"{harness.load_text(summary.get('loadavg_end', []))}; {summary.get('date', '')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(
    ax: Any, bars: list[tuple[str, Any, str]], ylabel: str, title: str, log: bool = False
) -> None:
    from matplotlib.ticker import FuncFormatter

    labels = [b[0] for b in bars]
    values = [b[1] or 0 for b in bars]
    drawn = ax.bar(labels, values, color=[b[2] for b in bars])
    if log:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    for rect, (_label, value, _c) in zip(drawn, bars, strict=True):
        text = "not measured" if value is None else f"{value:,.0f}"
        ax.annotate(
            text,
            (rect.get_x() + rect.get_width() / 2, rect.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.tick_params(axis="x", labelsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--events", type=int, help="pipeline data set events")
    parser.add_argument("--users", type=int, help="pipeline data set users")
    parser.add_argument("--state-users", type=int, help="state/recovery users")
    parser.add_argument("--state-events", type=int, help="state/recovery events")
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument(
        "--latency-rate", type=float, help="default: half the measured pipeline rate"
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: make summary.json, the chart and the targets table from the "
        "result files already in benchmarks/results (after running a step again apart)",
    )
    args = parser.parse_args(argv)
    if args.from_results:
        return _from_results()
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key, None) is not None:
            sizes[key] = getattr(args, key)

    load_start = harness.load_average()
    log(f"userpulse benchmarks ({'smoke run' if args.quick else 'full run'}): {sizes}")
    log(f"machine: {harness.machine()}")
    log(f"load average at start: {harness.load_text(load_start)}")

    stack = Stack(StackSettings.from_env())
    ours = stack.live_pid("kafka") is None or stack.live_pid("redis") is None
    endpoints = stack.up()
    base = harness.base_settings(endpoints.kafka_bootstrap, endpoints.redis_url)
    summary: dict[str, Any] = {"quick": args.quick, "errors": {}}
    started = time.perf_counter()
    try:
        with Bench.open(base, stack) as bench:
            summary |= harness.envelope("run", bench, load_start, **sizes)
            summary["benchmark"] = "benchmarks/run.py"

            def step(
                name: str, fn: Callable[[], dict[str, Any]], text: Callable[[Any], str]
            ) -> None:
                step_load = harness.load_average()
                log(f"\n=== {name} === (load average {harness.load_text(step_load)})")
                try:
                    result = fn()
                except (BenchError, OSError, RuntimeError, ValueError) as exc:
                    summary["errors"][name] = f"{type(exc).__name__}: {exc}"
                    log(f"{name} FAILED: {exc}")
                    traceback.print_exc()
                    return
                summary[name] = result
                print(text(result), flush=True)
                doc = harness.envelope(name, bench, step_load, **sizes) | result
                harness.write_result(name, doc)

            prepared: dict[str, Any] = {}
            core_sizes = CORE_QUICK if args.quick else CORE_FULL

            def do_core() -> dict[str, Any]:
                result = core.measure(**core_sizes)
                own = {"events": core_sizes["events"], "users": core_sizes["users"]}
                return {"sizes": own, **result}  # its own sizes, not the run's

            step("core", do_core, core.report)

            def do_ceiling() -> dict[str, Any]:
                prepared["data"] = pipeline.prepare(bench, sizes["events"], sizes["users"])
                summary["load"] = prepared["data"].load_summary()
                return {"load": summary["load"], **ceiling.measure(bench, prepared["data"])}

            step("ceiling", do_ceiling, ceiling.report)

            def do_pipeline() -> dict[str, Any]:
                run = pipeline.run_workers(bench, _need(prepared, "data"))
                return run.result

            step(
                "pipeline",
                do_pipeline,
                lambda r: pipeline.report(
                    pipeline.Run("pipeline", [], r),
                    _get(summary, "ceiling", "read_decode", "events_per_s"),
                ),
            )

            def do_scaling() -> dict[str, Any]:
                known = {1: summary["pipeline"]} if "pipeline" in summary else None
                return scaling.measure(bench, _need(prepared, "data"), known=known)

            step("scaling", do_scaling, scaling.report)

            def do_latency() -> dict[str, Any]:
                rate = args.latency_rate
                if not rate:
                    measured = [
                        _get(summary, "pipeline", "events_per_s"),
                        _get(summary, "pipeline", "steady_10_90_events_per_s"),
                    ]
                    top = max((m for m in measured if m), default=None)
                    if not top:
                        raise BenchError("no pipeline rate to take half of; give --latency-rate")
                    rate = top / 2
                return latency.measure(bench, rate, sizes["latency_seconds"])

            step("latency", do_latency, latency.report)

            def do_state() -> dict[str, Any]:
                run = state.measure(bench, sizes["state_users"], sizes["state_events"])
                prepared["state"] = run
                return run.result

            step("state", do_state, state.report)

            def do_recovery() -> dict[str, Any]:
                return recovery.measure(bench, _need(prepared, "state"))

            step("recovery", do_recovery, recovery.report)

            summary["loadavg_end"] = harness.load_average()
    finally:
        if ours and not args.keep_stack:
            stack.down()
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    summary["targets"] = targets(summary)
    print()
    print(targets_table(summary["targets"]))
    for name, error in summary["errors"].items():
        print(f"  {name} failed: {error.splitlines()[0]}")
    timers = _get(summary, "latency", "timer_precision")
    if "latency" in summary and timers is None:
        print(f"  {latency.UNAVAILABLE}")
    log(
        f"load average: start {harness.load_text(load_start)}, "
        f"end {harness.load_text(summary.get('loadavg_end', harness.load_average()))}; "
        f"elapsed {summary['elapsed_s']:.0f} s"
    )
    harness.write_result("summary", summary)
    log(f"written: {SUMMARY}")
    log(f"written: {chart(summary)}")
    return 1 if summary["errors"] else 0


#: the benchmarks of a run, in the order the runner takes them
STEPS = ("ceiling", "pipeline", "scaling", "latency", "state", "recovery")
#: taken into the summary when their result file is there (no error when not)
OPTIONAL_STEPS = ("core",)


def compose(directory: Path = harness.RESULTS_DIR) -> dict[str, Any]:
    """A summary made from the result files in ``directory`` — each written by
    the runner or by a benchmark run alone — for when a step was run again
    apart. Each step's date, sizes and load average stay in its own entry, and
    ``composed_from`` lists them."""
    summary: dict[str, Any] = {"quick": False, "errors": {}, "composed_from": {}}
    for name in STEPS:
        path = directory / f"{name}.json"
        if not path.exists():
            summary["errors"][name] = f"no result file {path}"
            continue
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as error:
            summary["errors"][name] = f"{path} is not JSON: {error}"
            continue
        summary[name] = doc
        summary["composed_from"][name] = {
            key: doc.get(key) for key in ("benchmark", "date", "sizes", "loadavg_start")
        }
    for name in OPTIONAL_STEPS:
        path = directory / f"{name}.json"
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        summary[name] = doc
        summary["composed_from"][name] = {
            key: doc.get(key) for key in ("benchmark", "date", "sizes", "loadavg_start")
        }
    runs = [summary[n] for n in STEPS if n in summary and set(FULL) <= set(summary[n]["sizes"])]
    if runs:  # the runner's sizes and setting, from the first step it wrote
        head = runs[0]
        summary["sizes"] = head["sizes"]
        summary["quick"] = head["sizes"] == QUICK
        for key in ("machine", "kafka_version", "redis_version", "partitions", "date"):
            summary[key] = head.get(key)
    dated = [summary[n] for n in STEPS if n in summary]
    if dated:
        summary["loadavg_start"] = dated[0].get("loadavg_start")
        summary["loadavg_end"] = dated[-1].get("loadavg_end")
    summary["targets"] = targets(summary)
    return summary


def _from_results() -> int:
    summary = compose()
    print(targets_table(summary["targets"]))
    for name, entry in summary["composed_from"].items():
        log(f"  {name}: {entry['date']}, sizes {entry['sizes']}")
    for name, error in summary["errors"].items():
        log(f"  {name}: {error}")
    harness.write_result("summary", summary)
    log(f"written: {SUMMARY}")
    log(f"written: {chart(summary)}")
    return 1 if summary["errors"] else 0


def _need(prepared: dict[str, Any], key: str) -> Any:
    if key not in prepared:
        raise BenchError(f"skipped: an earlier step that prepares {key!r} failed")
    return prepared[key]


if __name__ == "__main__":
    sys.exit(main())
