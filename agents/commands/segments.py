"""``userpulse segments``: how many users per stage, health, RFM segment and
tier, and who they are — read from the Redis index sets of the projection.

Registered on the main command group by :mod:`agents.commands.cli`; it does
not import it (the CLI imports this module).
"""

from __future__ import annotations

import difflib
import unicodedata

import click
import orjson
import redis

from agents.commands.terminal import fail
from agents.environment import check_redis_prefix
from agents.envvars import redact_url
from agents.redis.profiles import ProfileReader
from agents.settings import Settings
from streams.errors import UserpulseError
from streams.profile import INDEX_DIMENSIONS, index_values


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (CJK segment names take two each)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """The counts as an aligned table, one row per dimension and value."""
    rows = [("DIMENSION", "VALUE", "USERS")]
    for dimension, values in counts.items():
        if not values:
            rows.append((dimension, "(no users)", "0"))
        rows += [(dimension, value, str(n)) for value, n in values.items()]
    dim_w = max(_width(r[0]) for r in rows)
    val_w = max(_width(r[1]) for r in rows)
    num_w = max(len(r[2]) for r in rows)
    return "\n".join(f"{_pad(d, dim_w)}  {_pad(v, val_w)}  {n.rjust(num_w)}" for d, v, n in rows)


@click.command("segments")
@click.option(
    "--list",
    "list_",
    nargs=2,
    metavar="DIMENSION VALUE",
    default=None,
    help="List the users with DIMENSION = VALUE, e.g. --list stage activated.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="With --list: list at most this many users.  [default: 100]",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def segments_command(list_: tuple[str, str] | None, limit: int | None, as_json: bool) -> None:
    """Users per stage, health, segment and tier (from Redis); or --list the members of one.

    \b
    DIMENSION is stage, health, segment or tier; VALUE one of the values
    `userpulse segments` prints (a segment also by its label, e.g. 重要价值客户).

    \b
    Examples:
      userpulse segments
      userpulse segments --list segment important_value --limit 20
      userpulse segments --list segment 重要价值客户
      userpulse segments --json
    """
    if limit is not None and list_ is None:
        raise click.UsageError("--limit only applies with --list DIMENSION VALUE")
    if list_ is not None:
        list_ = (list_[0], _indexed(*list_))
    url = ""
    try:
        settings = Settings.from_env()
        url = settings.redis_url.reveal()
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        reader = ProfileReader(client, settings.redis_key_prefix)
        try:
            check_redis_prefix(settings, client)  # never another environment's keys
            if list_ is None:
                _show_counts(reader, as_json)
            else:
                _show_members(reader, list_[0], list_[1], limit or 100, as_json)
        finally:
            client.close()
    except UserpulseError as exc:
        fail(str(exc))
    except (redis.RedisError, OSError) as exc:
        fail(
            f"cannot read Redis at {redact_url(url)} ({exc}); "
            "start it with `userpulse stack up` or set USERPULSE_REDIS_URL"
        )


def _indexed(dimension: str, value: str) -> str:
    """The index value ``value`` names, or a usage error that lists the choices."""
    if dimension not in INDEX_DIMENSIONS:
        raise click.BadParameter(
            f"unknown dimension {dimension!r}: use one of {', '.join(INDEX_DIMENSIONS)}",
            param_hint="--list DIMENSION",
        )
    choices = index_values(dimension)
    if value in choices:
        return choices[value]
    guess = difflib.get_close_matches(value, list(choices), n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    values = ", ".join(dict.fromkeys(choices.values()))
    raise click.BadParameter(
        f"no {dimension} is called {value!r}: {hint}the {dimension}s are {values}",
        param_hint="--list VALUE",
    )


def _show_counts(reader: ProfileReader, as_json: bool) -> None:
    counts = reader.counts()
    if as_json:
        click.echo(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_counts(counts))


def _show_members(
    reader: ProfileReader, dimension: str, value: str, limit: int, as_json: bool
) -> None:
    total = reader.count(dimension, value)
    members = reader.members(dimension, value, limit)
    if as_json:
        doc = {"dimension": dimension, "value": value, "total": total, "members": members}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    for user_id in members:
        click.echo(user_id)
    if total > len(members):
        click.echo(f"(listed {len(members)} of {total}; raise --limit for more)", err=True)
    elif not members:
        click.echo(f"no users with {dimension} = {value}", err=True)
