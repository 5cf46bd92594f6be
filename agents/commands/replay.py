"""``userpulse replay``: publish a public e-commerce dataset as userpulse events.

The command reads its options, shows progress and prints the summary; the
replay itself is :func:`agents.kafka.replay.replay_file`, which reads the
file with :func:`agents.files.datasets.mapped_rows`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from agents.commands.options import ordering_options
from agents.commands.terminal import ProgressLine, fail
from agents.errors import UserpulseError
from agents.kafka.replay import ReplayInterrupted, ReplayProgress, ReplayReport, replay_file
from agents.settings import Settings
from streams.datasets import LAYOUTS


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ms / 1000))


def summary(report: ReplayReport, rejected_path: str | Path | None = None) -> str:
    """The lines ``userpulse replay`` prints at the end."""
    order = "presorted, streamed" if report.presorted else "sorted in memory"
    sent = "valid (dry run: nothing sent)" if report.dry_run else "sent"
    lines = [
        f"replayed {report.source} ({report.layout}, {order})",
        f"  rows      {report.rows:,}",
        f"  events    {report.events:,} mapped, {report.sent:,} {sent}",
        f"  rejected  {report.rejected:,}"
        + (
            " (" + ", ".join(f"{c} {n:,}" for c, n in sorted(report.rejected_by_code.items())) + ")"
            if report.rejected
            else ""
        ),
        f"  time span {_iso(report.first_event_ms)} … {_iso(report.last_event_ms)}",
        f"  elapsed   {report.elapsed_s:.1f} s, {report.events_per_s:,.0f} events/s",
    ]
    if report.rejected and rejected_path is not None:
        lines.append(f"  rejected rows and events are in {rejected_path}")
    elif report.examples:
        lines.append("  first rejections (keep them all with --rejected FILE):")
        lines += [f"    line {r.line}: {r.error}" for r in report.examples]
    return "\n".join(lines)


@click.command("replay", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--layout",
    type=click.Choice(["auto", *LAYOUTS]),
    default="auto",
    show_default=True,
    help="Dataset layout; auto detects it from the CSV header.",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0),
    default=0.0,
    help="N = N× real time (gaps between event times / N); 0 (default) = as fast as possible.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after N rows.")
@click.option(
    "--rejected",
    "rejected_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write rejected rows and events here as JSON lines (line number, code, message, row).",
)
@ordering_options(stops="the replay")
@click.option("--dry-run", is_flag=True, help="Map and validate only; send nothing.")
def replay_command(
    file: str,
    layout: str,
    speedup: float,
    limit: int | None,
    rejected_path: str | None,
    presorted: bool | None,
    max_lateness_s: float,
    dry_run: bool,
) -> None:
    """Replay a public e-commerce dataset FILE (.csv, .csv.gz, - for stdin) as events.

    Layouts: REES46 "eCommerce behavior data from multi category store" and
    Retailrocket events.csv (docs/replay.md). Events go to user-events in
    event-time order, keyed by user, with deterministic event ids (a second
    replay of the same file is de-duplicated).
    """
    line = ProgressLine(sys.stderr)

    def printer(p: ReplayProgress) -> None:
        line.show(
            f"{p.phase:9} {p.rows:>12,} rows  {p.sent:>12,} sent  {p.rejected:>8,} rejected  "
            f"{p.recent_events_per_s:>9,.0f} events/s  {_clock(p.elapsed_s)}",
            p.elapsed_s,
            p.phase,
        )

    try:
        settings = Settings.from_env()
        report = replay_file(
            settings,
            file,
            layout,
            speedup,
            limit,
            rejected_path,
            printer,
            presorted=presorted,
            max_lateness_s=max_lateness_s,
            dry_run=dry_run,
        )
    except ReplayInterrupted as stop:
        line.end()
        click.echo(summary(stop.report, rejected_path))
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        line.end()
        click.echo("interrupted", err=True)
        sys.exit(130)
    except UserpulseError as exc:
        line.end()
        fail(str(exc))
    line.end()
    if report.topics_created:
        click.echo(f"created topics: {', '.join(report.topics_created)}", err=True)
    click.echo(summary(report, rejected_path))


if __name__ == "__main__":  # python -m agents.commands.replay FILE (also: userpulse replay FILE)
    replay_command()
