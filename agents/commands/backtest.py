"""The ``userpulse backtest`` command: options, policy and model files, the
summary on the terminal (the back-test itself is :mod:`agents.backtest`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from agents.backtest.file import backtest_file
from agents.backtest.report import BacktestProgress, summary
from agents.backtest.run import DEFAULT_PARTITIONS
from agents.commands.options import TimeType, ordering_options
from agents.commands.terminal import ProgressLine, fail
from agents.errors import UserpulseError
from agents.files.jsonl import LAYOUT_CHOICES
from agents.kafka.model_topic import model_params
from agents.settings import load_policy_file
from streams.bgnbd import BgNbdError
from streams.churn import ChurnModel
from streams.errors import ConfigError


def load_model_file(path: str | None) -> ChurnModel | None:
    """``--model``: the JSON record of the model topic (``r``, ``alpha``, ``a``,
    ``b``, ``unit_days``), e.g. saved from ``userpulse tail userpulse.model``;
    None: no model, as before the first ``userpulse fit``."""
    if path is None:
        return None
    fix = (
        'a JSON object like {"r": 0.24, "alpha": 4.41, "a": 0.79, "b": 2.43, "unit_days": 7}: '
        "the value of a record of the userpulse.model topic"
    )
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError("--model", f"cannot read {path} ({exc.strerror or exc})", fix) from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError("--model", f"{path} is not JSON ({exc})", fix) from None
    if isinstance(doc, dict) and isinstance(doc.get("value"), dict):
        doc = doc["value"]  # a record as `userpulse tail` prints it
    try:
        params, unit_days = model_params(doc)
    except (KeyError, TypeError) as exc:
        raise ConfigError("--model", f"{path} lacks a parameter ({exc})", fix) from None
    except BgNbdError as exc:
        raise ConfigError("--model", f"{path}: {exc}", fix) from None
    return ChurnModel(params, unit_days)


@click.command("backtest", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The policy TOML file to test (docs/policy.md); default: the built-in defaults.",
)
@click.option(
    "--layout",
    type=click.Choice(["auto", *LAYOUT_CHOICES]),
    default="auto",
    show_default=True,
    help="Dataset layout; auto detects it from the CSV header.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every trigger here, one CSV row each.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after N rows.")
@click.option(
    "--until",
    "until_ms",
    type=TimeType(),
    default=None,
    help="Read events up to this time and run the timers to it (ISO-8601 or epoch ms); "
    "default: the last event's time.",
)
@ordering_options(stops="the back-test")
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fitted churn-model parameters (JSON of the userpulse.model topic): turns the "
    "P(alive) churn rule on; default: no model, as before the first `userpulse fit`.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1, max=10_000),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Split the events into N partitions as Kafka's producer does, each on its own "
    "stream time: what a stream-clock worker with USERPULSE_PARTITIONS=N decides.",
)
@click.option(
    "--lateness",
    "lateness_s",
    type=click.IntRange(min=0),
    default=None,
    help="Fire deadlines in-stream once stream time is this many seconds past them, as "
    "USERPULSE_STREAM_LATENESS_S does; default: on the user's next event or at the end.",
)
def backtest_command(
    file: str,
    policy_path: str | None,
    layout: str,
    csv_path: str | None,
    limit: int | None,
    until_ms: int | None,
    presorted: bool | None,
    max_lateness_s: float,
    model_path: str | None,
    partitions: int,
    lateness_s: int | None,
) -> None:
    """Back-test a policy: which triggers would have fired on the history in FILE.

    Runs FILE through the worker's own engine on stream time, entirely in
    this process: no Kafka, no Redis, no topic is touched. FILE (.csv,
    .jsonl, optionally .gz, - for stdin) is a REES46 or Retailrocket dataset
    (as for `userpulse replay`) or JSON Lines: events as `userpulse produce`
    takes them, or an export of the user-events topic, in file order. Prints per trigger
    type how many would fire, when and for whom; --csv writes every trigger.
    """
    line = ProgressLine(sys.stderr)

    def printer(p: BacktestProgress) -> None:
        line.show(
            f"{p.phase:9} {p.rows:>12,} rows  {p.events:>12,} events  {p.triggers:>10,} "
            f"triggers  {p.rejected:>8,} rejected  {p.recent_events_per_s:>9,.0f} events/s  "
            f"{p.elapsed_s:6.0f} s",
            p.elapsed_s,
            p.phase,
        )

    try:
        policy = load_policy_file(policy_path, key="--policy", unset="leave --policy out")
        churn_model = load_model_file(model_path)
        report = backtest_file(
            file,
            policy,
            layout,
            limit,
            until_ms,
            csv_path,
            printer,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            churn_model=churn_model,
            partitions=partitions,
            lateness_ms=lateness_s * 1000 if lateness_s is not None else None,
        )
    except (UserpulseError, ConfigError) as exc:
        line.end()
        fail(str(exc))
    except KeyboardInterrupt:
        line.end()
        click.echo("interrupted", err=True)
        sys.exit(130)
    line.end()
    source = policy_path or "built-in defaults"
    if model_path is not None:
        source += f", churn model: {model_path}"
    click.echo(summary(report, policy_source=source))
    if csv_path is not None:
        click.echo(f"\n{report.trigger_count:,} triggers written to {csv_path}")


if (
    __name__ == "__main__"
):  # python -m agents.commands.backtest FILE (also: userpulse backtest FILE)
    backtest_command()
