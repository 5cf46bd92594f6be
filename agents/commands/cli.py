"""The ``userpulse`` command line.

Every command reads its configuration from the one settings object; errors
end with one line that says what is wrong and what to do, and a non-zero exit.
"""

from __future__ import annotations

import sys

import click
import orjson

from agents.commands.terminal import fail, friendly_errors
from agents.errors import UserpulseError
from agents.settings import Settings, StackSettings, describe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="userpulse")
def main() -> None:
    """userpulse — real-time user-lifecycle engine on Kafka, Faust and Redis."""


# ---- stack -----------------------------------------------------------------
@main.group()
def stack() -> None:
    """The local Kafka + Redis stack (no Docker): up, down, status."""


@stack.command("up")
@friendly_errors
def stack_up() -> None:
    """Start Kafka (KRaft) and Redis on 127.0.0.1; print export lines.

    Use it as: eval "$(userpulse stack up)"
    """
    from agents.stack.local import Stack

    endpoints = Stack(StackSettings.from_env()).up()
    click.echo(endpoints.exports(), nl=False)


@stack.command("down")
@friendly_errors
def stack_down() -> None:
    """Stop every process `stack up` (and `demo`) started, by pid file."""
    from agents.stack.local import Stack

    stopped = Stack(StackSettings.from_env()).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@stack.command("status")
@friendly_errors
def stack_status() -> None:
    """Show whether Kafka and Redis run and answer, and the workers the stack
    started; exit 1 when Kafka or Redis does not."""
    from agents.stack.local import Stack

    statuses = Stack(StackSettings.from_env()).status()
    healthy = True
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        state = "up" if s.answering else ("running, not answering" if s.running else "down")
        healthy &= s.answering
        pid = f"pid {s.pid}" if s.pid else "no pid"
        click.echo(f"{s.name:{width}} {state:24} {s.address:28} {pid:12} log {s.log}")
    sys.exit(0 if healthy else 1)


# ---- worker ----------------------------------------------------------------
@main.command()
@click.option("--web-port", type=int, default=None, help="Override USERPULSE_WEB_PORT.")
@friendly_errors
def worker(web_port: int | None) -> None:
    """Run one worker: consume user-events, keep state, project to Redis, emit triggers.

    Start more workers (same USERPULSE_APP_ID) to scale; each takes a share
    of the partitions. Refuses to start on another environment's consumer
    group, data dir or Redis key prefix. Stops gracefully on SIGTERM / Ctrl-C.
    """
    import dataclasses

    from agents.environment import claim_environment
    from agents.kafka.admin import ensure_topics

    settings = Settings.from_env()
    if web_port is not None:
        settings = dataclasses.replace(settings, web_port=web_port)
    settings.load_policy()  # a bad policy file stops the worker before it joins the group
    from agents.worker.process import check_web_port, run_worker

    check_web_port(settings)  # a second worker on a host: the fix, before anything starts
    # another environment's group, data dir or Redis keys: stop before touching anything
    claim_environment(settings)
    created = ensure_topics(settings)
    if created:
        click.echo(f"created topics: {', '.join(created)}", err=True)
    run_worker(settings)


@main.command()
@click.option(
    "--check", is_flag=True, help="Create nothing; exit 1 when a topic differs from the plan."
)
@friendly_errors
def topics(check: bool) -> None:
    """Create the contract topics that are missing (workers do this too), then
    describe every topic of the environment — partitions, cleanup, retention,
    the changelog's dirty ratio — against what userpulse plans for it
    (docs/operations.md, "Topics"). With --check: create nothing, and exit 1
    when a topic is missing or differs."""
    from agents.kafka.admin import admin_client, ensure_topics
    from agents.kafka.topic_plan import describe, table

    settings = Settings.from_env()
    created: list[str] = []
    if not check:
        created = ensure_topics(settings)
        if created:
            click.echo(f"created: {', '.join(created)}", err=True)
    admin = admin_client(settings)
    try:
        found = describe(admin, settings, created=created)
    finally:
        admin.close()
    click.echo(table(found))
    if check and any(f.problems for f in found):
        sys.exit(1)


# ---- demo ------------------------------------------------------------------
@main.command()
@click.option("--users", type=int, default=5, show_default=True, help="Sample users to publish.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait.")
@friendly_errors
def demo(users: int, timeout: float) -> None:
    """Stack up, start a worker, publish sample events, show triggers and profiles."""
    from agents.commands.demo import run_demo

    run_demo(users=users, timeout_s=timeout)


# ---- reading ---------------------------------------------------------------
@main.command()
@click.argument("topic")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new records.")
@click.option("--from-end", is_flag=True, help="Start at the end instead of the beginning.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record instead.")
@friendly_errors
def tail(topic: str, follow: bool, from_end: bool, as_json: bool) -> None:
    """Print TOPIC's records, one line each (a contract name like
    triggers.lifecycle; the prefix is added): triggers, dead letters and
    events in words with ISO-8601 UTC times; --json for the records as they are."""
    from agents.commands import tail as lines
    from agents.kafka.reader import iter_records

    settings = Settings.from_env()
    name = topic if topic.startswith(settings.topic_prefix) else settings.topic(topic)
    show = lines.as_json if as_json else lines.line
    for record in iter_records(
        settings.kafka_bootstrap,
        [name],
        from_beginning=not from_end,
        timeout_s=None if follow else 60.0,
        idle_timeout_s=None if follow else 2.0,
    ):
        click.echo(show(record))


@main.command()
@click.argument("user_id")
@friendly_errors
def profile(user_id: str) -> None:
    """Print USER_ID's profile from Redis."""
    import redis

    from agents.environment import check_redis_prefix
    from agents.redis.profiles import ProfileReader

    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url.reveal(), decode_responses=True)
    try:
        check_redis_prefix(settings, client)
        fields = ProfileReader(client, settings.redis_key_prefix).profile(user_id)
    except (redis.RedisError, OSError) as exc:
        raise UserpulseError(
            f"cannot read Redis ({exc}); start it (userpulse stack up) or set USERPULSE_REDIS_URL"
        ) from None
    if not fields:
        fail(f"no profile for {user_id!r} (check the id and USERPULSE_REDIS_KEY_PREFIX)")
    click.echo(orjson.dumps(fields, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@main.command()
@friendly_errors
def settings() -> None:
    """List every USERPULSE_* setting: its value, where it came from, its meaning."""
    for name, value, source, meaning in describe():
        click.echo(f"{name:34} {value or '(empty)':34} {source:38} {meaning}")


def _register_commands() -> None:
    from agents.commands.backtest import backtest_command
    from agents.commands.dlq import dlq_group
    from agents.commands.fit import fit_command
    from agents.commands.produce import produce_command
    from agents.commands.replay import replay_command
    from agents.commands.segments import segments_command

    main.add_command(segments_command)
    main.add_command(produce_command)
    main.add_command(dlq_group)
    main.add_command(replay_command)
    main.add_command(fit_command)
    main.add_command(backtest_command)


_register_commands()

if __name__ == "__main__":
    main()
