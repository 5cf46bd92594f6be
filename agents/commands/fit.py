"""`userpulse fit`: the BG/NBD churn model fitted on every user's state.

`userpulse fit` reads every user's state from the state table's changelog
topic (compacted: the latest state per user), summarises each buyer as
(x, t_x, T), fits the BG/NBD population parameters (r, α, a, b) by maximum
likelihood (:func:`streams.bgnbd_fit.fit`) and publishes them to the compacted
model topic ``userpulse.model``. Every worker follows that topic from its
beginning (no consumer group, so every worker sees every version) and uses
the newest parameters for P(alive) churn warnings and the profile's
expected purchases.

A fit is **as of** one time, the "now" of every buyer's age T: ``--as-of``
when given; else on the stream clock (``USERPULSE_CLOCK=stream``: replayed
history) the stream time, the newest event time in the state; else the wall
clock. It refuses (:class:`FitRefusedError`, one line: what is wrong and
what to do) an as-of before some buyer's last order — the state keeps no
order history to go back with — and, unless ``--force``, a degenerate fit:
ages beyond the data, an optimum on a bound of the optimiser, a parameter
run off towards 0 or ∞, no convergence (docs/churn-model.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import click

from agents.commands.options import TimeType, format_time
from agents.environment import check_consumer_group
from agents.errors import UserpulseError
from agents.kafka.changelog import changelog_topic, read_states
from agents.kafka.model_topic import (
    AS_OF_OPTION,
    AS_OF_STREAM,
    AS_OF_WALL,
    MODEL_TOPIC,
    Model,
    publish_model,
)
from agents.settings import Settings
from streams.bgnbd import BgNbdError, BgNbdParams, summary
from streams.bgnbd_fit import FitResult, fit
from streams.policy import DAY_MS
from streams.userstate import UserState

_AS_OF_MEANING = {
    AS_OF_OPTION: "--as-of",
    AS_OF_STREAM: "stream time: the newest event time in the state",
    AS_OF_WALL: "wall clock: now",
}
#: Ages beyond the data: the oldest buyer's T exceeds the data's span by more
#: than this share of the span, and by more than a day.
AGE_SLACK = 0.1
#: A parameter beyond [1/RUNAWAY, RUNAWAY] ran off: the data cannot pin it down.
RUNAWAY = 1e4


class FitRefusedError(UserpulseError):
    """`userpulse fit` will not fit or publish; the message says why and what to do."""


@dataclass(frozen=True)
class Population:
    """What a fit reads from the states: each buyer's (first order, last
    order, orders) and the time span of all the data — the earliest and the
    newest event time (``first_seen_ms``, ``last_seen_ms``) of any user."""

    buyers: tuple[tuple[int, int, int], ...]
    oldest_ms: int | None
    newest_ms: int | None

    @classmethod
    def of(cls, states: Iterable[UserState]) -> Population:
        buyers: list[tuple[int, int, int]] = []
        oldest: int | None = None
        newest: int | None = None
        for st in states:
            first, last = st.first_seen_ms, st.last_seen_ms
            if st.first_order_ms is not None and st.order_count > 0:
                order = st.first_order_ms if st.last_order_ms is None else st.last_order_ms
                order = max(order, st.first_order_ms)
                buyers.append((st.first_order_ms, order, st.order_count))
                first, last = min(first, st.first_order_ms), max(last, order)
            oldest = first if oldest is None else min(oldest, first)
            newest = last if newest is None else max(newest, last)
        return cls(tuple(buyers), oldest, newest)


@dataclass(frozen=True)
class AsOf:
    """The time a fit summarises the buyers at, and where it came from."""

    ms: int
    source: str

    def __str__(self) -> str:
        return f"{format_time(self.ms)} ({_AS_OF_MEANING.get(self.source, self.source)})"


def choose_as_of(population: Population, clock: str, explicit_ms: int | None, now_ms: int) -> AsOf:
    """``--as-of`` when given; on the stream clock the stream time — the
    newest event time in the state (the highest ``last_seen_ms``; a
    stream-clock worker never evaluates a state past it, so ``evaluated_ms``
    adds nothing); on the wall clock now."""
    if explicit_ms is not None:
        return AsOf(explicit_ms, AS_OF_OPTION)
    if clock != "stream":
        return AsOf(now_ms, AS_OF_WALL)
    if population.newest_ms is None:
        raise FitRefusedError(
            "the state holds no event, so there is no stream time to fit as of: "
            "replay the events first, or choose a time with --as-of"
        )
    return AsOf(population.newest_ms, AS_OF_STREAM)


def buyer_summaries(
    population: Population, as_of: AsOf, unit_days: float, tolerance_ms: int = 0
) -> list[tuple[int, float, float]]:
    """Every buyer's (x, t_x, T) as of ``as_of``.

    The state keeps a buyer's first and last order and their count, not the
    order history, so orders after the as-of time cannot be left out: a
    buyer whose last order is after it — by more than ``tolerance_ms`` (the
    wall clock's allowed future skew; T is then t_x) — refuses the fit.
    """
    late = [last for _, last, _ in population.buyers if last > as_of.ms + tolerance_ms]
    if late:
        newest = format_time(max(late))
        raise FitRefusedError(
            f"{len(late)} of {len(population.buyers)} buyers ordered after the as-of time "
            f"{as_of} (the last at {newest}) and the state keeps no order history to leave "
            f"those orders out: fit as of {newest} or later"
        )
    return [
        data
        for first, last, count in population.buyers
        if (data := summary(first, last, count, as_of.ms, unit_days)) is not None
    ]


@dataclass(frozen=True)
class Problem:
    """Why a fit must not be published: what is wrong, and what to do."""

    what: str
    fix: str

    def refusal(self) -> str:
        return (
            f"degenerate fit, nothing was published: {self.what}. "
            f"{self.fix}, or publish anyway with --force"
        )


def degenerate(params: BgNbdParams) -> bool:
    """A parameter far outside any plausible range: the data could not pin it
    down (e.g. a, b → ∞ when every buyer seems to drop out alike)."""
    values = (params.r, params.alpha, params.a, params.b)
    return max(values) > RUNAWAY or min(values) < 1 / RUNAWAY


def fit_problems(result: FitResult, population: Population, as_of: AsOf) -> list[Problem]:
    """What makes a fit degenerate (empty: nothing), the root cause first:
    ages beyond the data (the oldest buyer's T longer than the span of all
    the data, by more than :data:`AGE_SLACK` of it and a day — the as-of time
    lies after the data ended), an optimum on a bound of the optimiser, a
    parameter run off towards 0 or ∞, no convergence."""
    problems: list[Problem] = []
    more_data = "The data cannot pin the parameters down: fit on more buyers or a longer history"
    if population.buyers and population.oldest_ms is not None and population.newest_ms is not None:
        age = as_of.ms - min(first for first, _, _ in population.buyers)
        span = population.newest_ms - population.oldest_ms
        if age > span + max(span * AGE_SLACK, DAY_MS):
            problems.append(
                Problem(
                    f"ages beyond the data: the oldest buyer's age T would be {_days(age)} "
                    f"but the data span {_days(span)} ({format_time(population.oldest_ms)} "
                    f"to {format_time(population.newest_ms)}), as the as-of time {as_of} "
                    f"is {_days(as_of.ms - population.newest_ms)} after the newest event",
                    "Fit as of the data's time: USERPULSE_CLOCK=stream for replayed "
                    "history, or --as-of",
                )
            )
    p = result.params
    if result.on_bound:
        at = ", ".join(f"{name} = {getattr(p, name):.3g}" for name in result.on_bound)
        problems.append(Problem(f"the optimum is on a bound of the optimiser ({at})", more_data))
    elif degenerate(p):
        problems.append(Problem("a parameter ran off towards 0 or infinity", more_data))
    if not result.converged and not result.on_bound:
        problems.append(
            Problem(f"the optimiser did not converge in {result.iterations} iterations", more_data)
        )
    return problems


def _days(ms: int) -> str:
    return f"{ms / DAY_MS:,.1f} days"


@click.command("fit")
@click.option(
    "--unit-days",
    type=click.FloatRange(min=0, min_open=True),
    default=7.0,
    show_default=True,
    help="Model time unit.",
)
@click.option("--min-buyers", type=int, default=200, show_default=True, help="Fewer: refuse.")
@click.option(
    "--as-of",
    "as_of_ms",
    type=TimeType(),
    default=None,
    help="Fit as of this time (ISO-8601, UTC without a zone, or epoch ms); default: the "
    "stream time with USERPULSE_CLOCK=stream, else now.",
)
@click.option("--publish/--no-publish", default=True, show_default=True, help="Send to workers.")
@click.option(
    "--force",
    is_flag=True,
    help="Publish even a degenerate fit (ages beyond the data, an optimum on a bound, "
    "a parameter run off, no convergence).",
)
def fit_command(
    unit_days: float, min_buyers: int, as_of_ms: int | None, publish: bool, force: bool
) -> None:
    """Fit the BG/NBD churn model on every user's state and publish it to the workers."""
    try:
        settings = Settings.from_env()
        check_consumer_group(settings)  # never another environment's changelog
        started = time.monotonic()
        click.echo(f"reading states from {changelog_topic(settings)} …", err=True)
        population = Population.of(read_states(settings))
        now = time.time_ns() // 1_000_000
        buyers = len(population.buyers)
        if buyers < min_buyers:
            raise UserpulseError(
                f"only {buyers} buyers in the state; the fit needs at least {min_buyers} "
                "(lower --min-buyers to fit anyway)"
            )
        as_of = choose_as_of(population, settings.clock, as_of_ms, now)
        skew_ms = settings.max_future_skew_s * 1000 if as_of.source == AS_OF_WALL else 0
        data = buyer_summaries(population, as_of, unit_days, skew_ms)
        try:
            result = fit(data)
        except BgNbdError as exc:
            raise UserpulseError(f"the BG/NBD fit failed: {exc}") from None
        p = result.params
        click.echo(
            f"BG/NBD fitted on {buyers} buyers in {time.monotonic() - started:.1f} s "
            f"(unit {unit_days:g} days, converged: {result.converged})\n"
            f"  as of {as_of}\n"
            f"  r = {p.r:.4f}   alpha = {p.alpha:.4f}   a = {p.a:.4f}   b = {p.b:.4f}\n"
            f"  log-likelihood = {result.log_likelihood:.2f}"
        )
        problems = fit_problems(result, population, as_of)
        if problems and publish and not force:
            raise FitRefusedError(problems[0].refusal())
        for problem in problems:
            click.secho(
                f"userpulse: warning: degenerate fit: {problem.what}", fg="yellow", err=True
            )
        if publish:
            model = Model(p, unit_days, now, buyers, result.log_likelihood, as_of.ms, as_of.source)
            publish_model(settings, model)
            click.echo(f"published to {settings.topic(MODEL_TOPIC)}; workers use it from now on")
    except UserpulseError as exc:
        click.secho(f"userpulse: error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
