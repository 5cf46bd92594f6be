"""`userpulse demo`: the whole loop on this machine in one command.

Brings the local stack up, starts a worker in the background (registered
with the stack, so `userpulse stack down` stops it too), publishes a few
sample users' journeys plus one bad record, then shows the triggers, the
dead letter and the Redis profiles the worker produced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import click
import orjson
import redis

from agents.errors import UserpulseError
from agents.kafka.admin import ensure_topics
from agents.kafka.deadletters import DLQ_HEADERS
from agents.kafka.producer import EventProducer, new_event
from agents.kafka.reader import Record, collect, end_offsets
from agents.redis.profiles import ProfileReader
from agents.settings import Settings, StackSettings
from agents.stack.local import Stack
from agents.stack.programs import REPO_ROOT
from streams import topics

WORKER_NAME = "worker-demo"
WORKER_MARKER = "agents.commands.cli worker"
DEMO_POLICY = REPO_ROOT / "deploy" / "demo-policy.toml"


def sample_journeys(run: str, users: int, now_ms: int) -> list[dict[str, Any]]:
    """A few users' events, oldest first, ending just before ``now_ms``."""
    events: list[dict[str, Any]] = []
    start = now_ms - 3_000
    for i in range(users):
        user = f"demo-{run}-u{i + 1}"
        t = start + i * 500
        journey: list[tuple[str, dict[str, Any]]] = [
            ("signed_up", {"method": "email"}),
            ("session_started", {}),
            ("product_viewed", {"product_id": f"sku-{i % 3}"}),
        ]
        if i % 2 == 0:
            journey.append(
                (
                    "product_added",
                    {
                        "product_id": f"sku-{i % 3}",
                        "quantity": 1,
                        "price": 19.9,
                        "cart_id": f"c-{user}",
                    },
                )
            )
        if i % 3 == 0:
            journey.append(
                (
                    "order_completed",
                    {
                        "order_id": f"o-{user}",
                        "revenue": 19.9,
                        "currency": "EUR",
                        "products": [{"product_id": f"sku-{i % 3}", "quantity": 1, "price": 19.9}],
                        "cart_id": f"c-{user}",
                    },
                )
            )
        for step, (etype, props) in enumerate(journey):
            events.append(
                new_event(
                    user,
                    etype,
                    props,
                    timestamp_ms=t + step * 100,
                    context={"channel": "web", "campaign": {"source": "demo"}},
                )
            )
    return events


def run_demo(*, users: int, timeout_s: float) -> None:
    stack = Stack(StackSettings.from_env())
    endpoints = stack.up()
    env = {
        **os.environ,
        "USERPULSE_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "USERPULSE_REDIS_URL": endpoints.redis_url,
    }
    if "USERPULSE_POLICY_FILE" not in env and DEMO_POLICY.exists():
        env["USERPULSE_POLICY_FILE"] = str(DEMO_POLICY)  # timed triggers in seconds
    settings = Settings.from_env(env)
    created = ensure_topics(settings)
    if created:
        _say(f"created topics: {', '.join(created)}")

    log = stack.dir / "logs" / f"{WORKER_NAME}.log"
    pid = stack.live_pid(WORKER_NAME)
    if pid is None:
        _say(f"starting a worker in the background (log: {log})")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agents.commands.cli", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.register(WORKER_NAME, proc.pid, WORKER_MARKER)
        pid = proc.pid
    else:
        _say(f"a demo worker is already running (pid {pid})")

    run = uuid.uuid4().hex[:6]
    # read only what comes from now on: earlier runs and traffic may have left
    # far more on these topics than can be read in the time the demo waits
    trigger_topics = [settings.topic(t) for t in topics.TRIGGER_TOPICS]
    dlq = [settings.topic(topics.DEAD_LETTERS)]
    since = end_offsets(settings.kafka_bootstrap, trigger_topics + dlq)
    events = sample_journeys(run, users, time.time_ns() // 1_000_000)
    with EventProducer(settings) as producer:
        for doc in events:
            producer.send(doc)
        # one broken record, to show the dead-letter topic at work
        producer.send_raw(f"demo-{run}-broken".encode(), b'{"type": "page_viewed", "user_id": 42')
    _say(f"published {len(events)} events for {users} users (run {run}) and 1 broken record")

    user_ids = sorted({str(e["user_id"]) for e in events})
    _say("waiting for the worker to produce triggers and profiles …")
    deadline = time.monotonic() + timeout_s

    def mine(records: list[Record]) -> list[Record]:
        return [r for r in records if (r.key or b"").decode().startswith(f"demo-{run}-")]

    carts = {str(e["user_id"]) for e in events if e["type"] == "product_added"} - {
        str(e["user_id"]) for e in events if e["type"] == "order_completed"
    }

    def complete(rs: list[Record]) -> bool:
        if not _worker_alive(stack):
            return True
        kinds = {(r.json()["user_id"], r.json()["type"]) for r in mine(rs)}
        first_seen = {u for u, kind in kinds if kind == "stage_changed"}
        reminded = {u for u, kind in kinds if kind == "cart_abandoned"}
        return first_seen >= set(user_ids) and reminded >= carts

    if carts:
        _say(
            f"{len(carts)} users left a cart: the first reminder is due 8 s after their last change"
        )
    triggers = mine(
        collect(
            settings.kafka_bootstrap,
            trigger_topics,
            complete,
            timeout_s=max(1.0, deadline - time.monotonic()),
            start=since,
        )
    )
    if not _worker_alive(stack):
        raise UserpulseError(f"the demo worker exited; read its log: {log}")
    dead = mine(
        collect(
            settings.kafka_bootstrap,
            dlq,
            lambda rs: len(mine(rs)) >= 1,
            timeout_s=max(1.0, deadline - time.monotonic()),
            start=since,
        )
    )
    profiles = _wait_profiles(settings, events, deadline)

    click.secho(f"\n== triggers ({len(triggers)}) ==", bold=True)
    for r in triggers:
        t = r.json()
        reason = t["reason"]
        what = (
            f"{reason.get('from')} -> {reason.get('to')}"
            if "to" in reason
            else f"step {reason.get('step')}, cart value {t['payload'].get('value')}"
        )
        click.echo(
            f"{r.topic:26} {t['user_id']:16} {t['type']:15} {what:26} "
            f"rule={reason.get('rule')}  trigger_id={t['trigger_id'][:12]}…"
        )
    click.secho(f"\n== dead letters ({len(dead)}) ==", bold=True)
    for r in dead:
        code, path, message, topic, partition, offset = (
            r.headers[name].decode() for name in DLQ_HEADERS
        )
        click.echo(f"{code} at {path}: {message}  (from {topic}[{partition}]@{offset})")
    click.secho(f"\n== Redis profiles ({len(profiles)}) ==", bold=True)
    for user_id, fields in profiles.items():
        click.echo(f"{user_id}: " + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode())

    missing = [u for u in user_ids if u not in profiles]
    if not complete(triggers) or missing or not dead:
        raise UserpulseError(
            f"the worker did not finish within {timeout_s:.0f} s (triggers {len(triggers)}/"
            f"{len(user_ids)}, profiles {len(profiles)}/{len(user_ids)}); read {log}"
        )
    click.echo(
        f"\nThe worker keeps running (pid {pid}, log {log}). Try:\n"
        '  eval "$(.venv/bin/userpulse stack up)"\n'
        "  .venv/bin/userpulse tail triggers.cart-abandonment   # the 2nd reminder comes 30 s in\n"
        "  .venv/bin/userpulse segments\n"
        f"  .venv/bin/userpulse profile {user_ids[0]}\n"
        "Stop the worker, Kafka and Redis with:\n"
        "  .venv/bin/userpulse stack down"
    )


def _wait_profiles(
    settings: Settings, events: list[dict[str, Any]], deadline: float
) -> dict[str, dict[str, str]]:
    counts: dict[str, int] = {}
    for e in events:
        counts[str(e["user_id"])] = counts.get(str(e["user_id"]), 0) + 1
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    reader = ProfileReader(client, settings.redis_key_prefix)
    profiles: dict[str, dict[str, str]] = {}
    try:
        while True:
            for user_id in counts:
                profiles[user_id] = reader.profile(user_id)
            done = all(p.get("event_count") == str(counts[u]) for u, p in profiles.items())
            if done or time.monotonic() > deadline:
                return {u: p for u, p in profiles.items() if p}
            time.sleep(0.2)
    finally:
        client.close()


def _worker_alive(stack: Stack) -> bool:
    return stack.live_pid(WORKER_NAME) is not None


def _say(message: str) -> None:
    click.echo(f"userpulse demo: {message}", err=True)
