"""Latency at a fixed offered load, and timer precision.

Ingest → trigger: one worker runs on a fresh topic; the generator's realistic
mix is offered open-loop at a fixed rate (by default 50 % of the pipeline's
measured throughput) for a fixed time, each event stamped with (about) its send
time as live traffic is (history would make the worker catch up on timers as
well, which the pipeline benchmark measures). Every user's first event makes the
worker emit ``stage_changed`` on ``triggers.lifecycle`` (reason ``first_seen``,
carrying the event's id). A separate consumer process, positioned at the end
of that topic before the load starts, notes when each of those triggers
arrives. Latency = the consumer's receive time − the time the event was due to
be sent (its slot in the schedule, so a producer that falls behind counts
against the figure rather than hiding it). Both are wall-clock readings on the
same machine. The trigger's own ``emitted_at`` splits it into ingest → emit
(ms resolution) and emit → received.

Timer precision: deadline → trigger emitted, for cart-abandonment reminders
with second-scale delays. It needs a policy file with a ``[cart]`` section
that the policy loader accepts and a delay setting in seconds; until the
timed triggers exist, it prints that it is not available and records null —
no number is made up.

Run from the repository root against a running stack:

    eval "$(.venv/bin/userpulse stack up)"
    .venv/bin/python -m benchmarks.latency --rate 1000 [--seconds 30]
    # without --rate: half the throughput in benchmarks/results/pipeline.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing as mp
import os
import sys
import time
from dataclasses import fields, is_dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import orjson

from benchmarks import harness
from benchmarks.generator import generate
from benchmarks.harness import Bench, log
from streams import topics

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
UNAVAILABLE = "timer precision: not available yet (no timed triggers in this build)"


# ---- the receiving side (its own process, so it never waits for the sender) ------------
def _collect(
    bootstrap: str,
    topic: str,
    id_prefix: str,
    expected: int,
    ready: MpEvent,
    stop: MpEvent,
    conn: Connection,
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        client_id="userpulse-bench-latency",
    )
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    ready.set()
    got: dict[str, tuple[float, int]] = {}
    prefix = id_prefix.encode()
    while len(got) < expected and not stop.is_set():
        for records in consumer.poll(timeout_ms=5).values():
            received = time.time()
            for r in records:
                if prefix not in r.value:
                    continue
                trigger = orjson.loads(r.value)
                reason = trigger.get("reason") or {}
                if trigger.get("type") == "stage_changed" and reason.get("rule") == "first_seen":
                    got.setdefault(reason["event_id"], (received, int(trigger["emitted_at"])))
    consumer.close()
    conn.send(got)
    conn.close()


# ---- the sending side ------------------------------------------------------------------
async def _offer(
    bootstrap: str, topic: str, data: Any, rate: float, start_at: float
) -> dict[str, Any]:
    """Send ``data`` at ``rate`` events/s from wall time ``start_at``; return
    each first event's due time and how far the sender fell behind."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        acks=1,
        linger_ms=0,
        client_id="userpulse-bench-latency-producer",
    )
    await producer.start()
    first = set(data.first_events.tolist())
    due_of: dict[str, float] = {}
    worst_lag = 0.0
    keys, values, parts = data.keys, data.values, data.partitions
    n = len(values)
    try:
        i = 0
        while i < n:
            now = time.time()
            while i < n and start_at + i / rate <= now:
                due = start_at + i / rate
                await producer.send(topic, values[i], key=keys[i], partition=parts[i])
                if i in first:
                    due_of[data.event_id(i)] = due
                worst_lag = max(worst_lag, now - due)
                i += 1
            await asyncio.sleep(0.001)
        await producer.flush()
        finished = time.time()
    finally:
        await producer.stop()
    return {
        "due": due_of,
        "offered_events_per_s": round(n / (finished - start_at)),
        "sender_worst_lag_ms": round(worst_lag * 1000, 1),
    }


def ingest_to_trigger(
    bench: Bench, rate: float, seconds: float, *, seed: int = 44
) -> dict[str, Any]:
    settings = bench.settings("latency")
    harness.create_topics(settings)
    worker = bench.start_worker(settings, "latency")
    warm_s = harness.ready(bench, worker)
    events = max(1, int(rate * seconds))
    data = generate(
        events,
        max(1, events // 10),
        seed=seed,
        partitions=settings.partitions,
        event_id_prefix=f"{bench.tag}-lat-",
        user_prefix="lat-u",
        live_rate=rate,  # each event stamped with (about) its send time, as live traffic is
    )
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receiver, sender = ctx.Pipe(duplex=False)
    trigger_topic = settings.topic(topics.TRIGGERS_LIFECYCLE)
    expected = len(data.first_events)
    collector = ctx.Process(
        target=_collect,
        args=(
            bench.base.kafka_bootstrap,
            trigger_topic,
            data.event_id_prefix,
            expected,
            ready,
            stop,
            sender,
        ),
        daemon=True,
    )
    collector.start()
    if not ready.wait(60):
        raise harness.BenchError("the latency consumer did not start within 60 s")
    log(
        f"latency: offering {events:,} events ({expected:,} new users) at {rate:,.0f} events/s "
        f"for {seconds:.0f} s …"
    )
    meter = harness.CpuMeter(
        {
            "worker": worker.pid,
            "kafka": bench.kafka_pid,
            "redis": bench.redis_pid,
            "bench (sender)": os.getpid(),
            "bench (receiver)": collector.pid,
        }
    )
    offered = asyncio.run(
        _offer(
            bench.base.kafka_bootstrap,
            settings.topic(topics.USER_EVENTS),
            data,
            rate,
            time.time() + 0.5,
        )
    )
    shares = meter.shares()
    got: dict[str, tuple[float, int]] = {}
    if receiver.poll(60):
        got = receiver.recv()
    else:
        stop.set()
        if receiver.poll(10):
            got = receiver.recv()
    collector.join(10)
    counters = worker.counters()
    worker.stop()

    due = offered["due"]
    total, to_emit, emit_to_recv = [], [], []
    per_second: dict[int, list[float]] = {}
    start = min(due.values(), default=0.0)
    for event_id, (received, emitted_ms) in got.items():
        sent = due.get(event_id)
        if sent is None:
            continue
        total.append((received - sent) * 1000)
        per_second.setdefault(int(sent - start), []).append(total[-1])
        to_emit.append(emitted_ms - sent * 1000)
        emit_to_recv.append(received * 1000 - emitted_ms)
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "events": events,
        "offered_events_per_s": offered["offered_events_per_s"],
        "sender_worst_lag_ms": offered["sender_worst_lag_ms"],
        "samples": len(total),
        "missing": expected - len(total),
        "ingest_to_trigger_ms": _stats(total),
        "max_ms_per_second": [round(max(v), 1) for _, v in sorted(per_second.items())],
        "ingest_to_emit_ms": _stats(to_emit),
        "emit_to_received_ms": _stats(emit_to_recv),
        "warm_up_ready_s": round(warm_s, 2),
        "cpu_cores": shares,
        "worker_counters": counters,
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p:g}": None for p in PERCENTILES} | {"max": None, "mean": None}
    ordered = sorted(values)
    out: dict[str, float | None] = {
        f"p{p:g}": round(harness.percentile(ordered, p), 1) for p in PERCENTILES
    }
    out["max"] = round(ordered[-1], 1)
    out["mean"] = round(sum(ordered) / len(ordered), 1)
    return out


# ---- timer precision -----------------------------------------------------------------
def cart_policy(delay_s: int = 2) -> tuple[str, tuple[float, ...]] | None:
    """A policy TOML with second-scale cart-abandonment delays (``delay_s``,
    2×, 3× … one per step) and no quiet hours or daily cap, and the delays;
    None when this build has no such policy."""
    from streams.errors import ConfigError
    from streams.policy import DEFAULT_POLICY
    from streams.policy_file import parse_policy

    try:
        parse_policy("[cart]\n", source="benchmark probe")
    except ConfigError:
        return None  # the loader rejects [cart]: no timed triggers yet
    section = getattr(DEFAULT_POLICY, "cart", None)
    if section is None or not is_dataclass(section):
        return None
    changes: dict[str, Any] = {}
    delays: tuple[float, ...] = ()
    for f in fields(section):
        name = f.name
        if "delay" not in name or not name.endswith(("_s", "_seconds")):
            continue
        current = getattr(section, name)
        if isinstance(current, tuple):
            changes[name] = tuple(delay_s * (i + 1) for i in range(max(1, len(current))))
            delays = tuple(float(d) for d in changes[name])
        elif isinstance(current, int | float):
            changes[name] = type(current)(delay_s)
            delays = (float(delay_s),)
    if not changes:
        return None  # delays only in minutes or hours: no second-scale test possible
    policy: Any = dataclasses.replace(DEFAULT_POLICY, cart=dataclasses.replace(section, **changes))
    delivery = getattr(policy, "delivery", None)
    if delivery is not None and is_dataclass(delivery):
        relax = {"quiet_hours": (), "daily_cap": 0}
        names = {f.name for f in fields(delivery)}
        policy = dataclasses.replace(
            policy,
            delivery=dataclasses.replace(
                delivery, **{k: v for k, v in relax.items() if k in names}
            ),
        )
    try:
        from streams.policy_keys import policy_to_toml

        text = policy_to_toml(policy)
        parse_policy(text, source="benchmark cart policy")
    except (ConfigError, TypeError, ImportError):
        return None
    return text, delays


def timer_precision(bench: Bench, users: int = 200, spread_s: float = 5.0) -> dict[str, Any] | None:
    """Deadline → trigger emitted for every step of the cart-abandonment
    reminders of ``users`` new carts, or None when this build has no timed
    triggers. The deadline is the trigger's ``reason.cart_last_change`` +
    ``reason.delay_s`` when it carries them, else the event's time + the
    configured delay of the first step."""
    policy = cart_policy()
    if policy is None:
        return None
    text, delays = policy
    path = bench.workdir / "cart-policy.toml"
    Path(path).write_text(text)
    settings = dataclasses.replace(bench.settings("timers"), policy_file=path)
    harness.create_topics(settings)
    worker = bench.start_worker(settings, "timers")
    harness.ready(bench, worker)
    watch = harness.TriggerWatch(
        settings.kafka_bootstrap, settings.topic(topics.TRIGGERS_CART_ABANDONMENT)
    )
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), linger_ms=0)
    sent_at: dict[str, int] = {}
    errors: list[float] = []
    expected = users * len(delays)
    log(
        f"timer precision: {users} carts, reminders after {', '.join(f'{d:g}' for d in delays)} s …"
    )
    try:
        for i in range(users):
            user = f"cart-{bench.tag}-{i}"
            now_ms = time.time_ns() // 1_000_000
            event = {
                "event_id": f"{bench.tag}-cart-{i}",
                "type": "product_added",
                "user_id": user,
                "timestamp": now_ms,
                "properties": {
                    "product_id": "sku-1",
                    "quantity": 1,
                    "price": 9.9,
                    "cart_id": f"c-{i}",
                },
            }
            producer.send(
                settings.topic(topics.USER_EVENTS), key=user.encode(), value=orjson.dumps(event)
            )
            sent_at[user] = now_ms
            time.sleep(spread_s / users)
        producer.flush()
        seen: set[tuple[str, Any]] = set()
        give_up = time.perf_counter() + max(delays) * 3 + 60
        while len(errors) < expected and time.perf_counter() < give_up:
            for _received, trigger in watch.poll(200):
                user = trigger.get("user_id")
                reason = trigger.get("reason") or {}
                step = reason.get("step", 1)
                if user not in sent_at or (user, step) in seen:
                    continue
                seen.add((user, step))
                if "cart_last_change" in reason and "delay_s" in reason:
                    due = float(reason["cart_last_change"]) + float(reason["delay_s"]) * 1000
                else:
                    due = sent_at[user] + delays[0] * 1000
                errors.append(float(trigger["emitted_at"]) - due)
            worker.check_alive("waiting for cart-abandonment triggers")
    finally:
        producer.close()
        watch.close()
        worker.stop()
    return {
        "carts": users,
        "delays_s": list(delays),
        "expected": expected,
        "received": len(errors),
        "deadline_to_emitted_ms": _stats(errors),
    }


def report(result: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("ingest_to_trigger_ms", "ingest → trigger received"),
        ("ingest_to_emit_ms", "  ingest → emitted_at"),
        ("emit_to_received_ms", "  emitted_at → received"),
    ):
        s = result[key]
        rows.append((label, s["p50"], s["p90"], s["p99"], s["p99.9"], s["max"]))
    text = harness.table(
        f"Latency at {result['offered_events_per_s']:,} events/s offered "
        f"(asked {result['rate_events_per_s']:,.0f}) for {result['seconds']:.0f} s — "
        f"{result['samples']:,} first-event triggers, {result['missing']:,} missing (ms)",
        ("", "p50", "p90", "p99", "p99.9", "max"),
        rows,
    )
    text += "\n  worst ingest → trigger in each second of the run (ms): " + " ".join(
        f"{v:,.0f}" for v in result.get("max_ms_per_second", [])
    )
    text += (
        f"\n  sender fell behind its schedule by at most {result['sender_worst_lag_ms']:.0f} ms; "
        f"CPU cores: {harness.cpu_text(result['cpu_cores'])}"
    )
    timers = result.get("timer_precision")
    if timers is None:
        text += f"\n{UNAVAILABLE}"
    else:
        s = timers["deadline_to_emitted_ms"]
        text += (
            f"\ntimer precision (deadline → emitted_at, {timers['received']:,} of "
            f"{timers['expected']:,} reminders of {timers['carts']} carts, delays "
            f"{'/'.join(f'{d:g}' for d in timers['delays_s'])} s): p50 {s['p50']} ms, "
            f"p99 {s['p99']} ms, p99.9 {s['p99.9']} ms, max {s['max']} ms"
        )
    return text


def rate_from_results(share: float = 0.5) -> float | None:
    path = harness.RESULTS_DIR / "pipeline.json"
    if not path.exists():
        return None
    doc = orjson.loads(path.read_bytes())
    rate = doc.get("steady_10_90_events_per_s") or doc.get("events_per_s")
    return share * float(rate) if rate else None


def measure(bench: Bench, rate: float, seconds: float) -> dict[str, Any]:
    result = ingest_to_trigger(bench, rate, seconds)
    result["timer_precision"] = timer_precision(bench)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, help="offered events/s (default: half the last pipeline result)"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    rate = args.rate or rate_from_results()
    if not rate:
        parser.error("give --rate, or run benchmarks.pipeline first (its result sets the rate)")
    load_start = harness.load_average()
    log(f"load average at start: {harness.load_text(load_start)}")
    with Bench.open() as bench:
        result = measure(bench, rate, args.seconds)
        print(report(result))
        doc = (
            harness.envelope("latency", bench, load_start, rate=rate, seconds=args.seconds) | result
        )
        log(f"load average at end: {harness.load_text(doc['loadavg_end'])}")
        log(f"written: {harness.write_result('latency', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
