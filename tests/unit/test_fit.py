"""`userpulse fit`: the as-of time (stream time, wall clock, --as-of) and the
refusals (as-of before some buyer's last order, ages beyond the data, an
optimum on a bound, a parameter run off, no convergence), without Kafka —
the changelog reader and the publisher are replaced by stand-ins."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

import agents.commands.fit
from agents.commands.cli import main
from agents.commands.fit import (
    AsOf,
    FitRefusedError,
    Population,
    buyer_summaries,
    choose_as_of,
    fit_problems,
)
from agents.commands.options import format_time, parse_time
from agents.kafka.model_topic import AS_OF_OPTION, AS_OF_STREAM, AS_OF_WALL, Model
from streams.bgnbd import BgNbdParams
from streams.bgnbd_fit import FitResult, fit
from streams.policy import DAY_MS
from streams.userstate import UserState

#: Fader, Hardie & Lee (2005), CDNOW, 2357 customers, 39-week calibration period.
PAPER = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
#: The paper's T and t_x count whole days from the first purchase's day to
#: 1997-09-30, the calibration period's last day (lifetimes'
#: cdnow_customers_summary.csv: customer 1, first order 1997-01-01, has
#: T = 272 days = 38.86 weeks). With each order at 00:00 UTC of its day that
#: is as of 1997-09-30T00:00:00Z — also the stream time after the replay,
#: since the last calibration orders are on that day.
CALIBRATION_END = "19970930"
PAPER_AS_OF = "1997-09-30T00:00:00Z"
GOOD = FitResult(PAPER, -9582.4, 18, True)


def cdnow_customer_days(until: str = CALIBRATION_END) -> list[tuple[str, str, float]]:
    """(customer id, YYYYMMDD, the day's dollars) — one order per customer-day —
    of lifetimes' CDNOW_sample.txt (columns: customer id, id, date, CDs,
    dollars) up to ``until``, in date order. Located through the installed
    distribution, without importing lifetimes (whose import pulls in autograd)."""
    try:
        dist = importlib.metadata.distribution("lifetimes")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("lifetimes (a dev extra: make install) is not installed: it ships CDNOW")
    path = Path(str(dist.locate_file("lifetimes/datasets/CDNOW_sample.txt")))
    dollars: dict[tuple[str, str], float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            customer, _, date, _, value = line.split()
            if date <= until:
                dollars[customer, date] = dollars.get((customer, date), 0.0) + float(value)
    return sorted(
        ((c, d, round(v, 2)) for (c, d), v in dollars.items()), key=lambda row: (row[1], row[0])
    )


def day_ms(date: str) -> int:
    """00:00 UTC of a YYYYMMDD day, in epoch ms."""
    return parse_time(datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC).isoformat())


def cdnow_states() -> list[UserState]:
    """Each CDNOW customer's state after their calibration orders (as a worker keeps it)."""
    orders: dict[str, list[int]] = {}
    for customer, date, _ in cdnow_customer_days():
        orders.setdefault(customer, []).append(day_ms(date))
    return [
        UserState(
            user_id=f"cdnow-{customer}",
            first_seen_ms=min(times),
            last_seen_ms=max(times),
            first_order_ms=min(times),
            last_order_ms=max(times),
            order_count=len(times),
            evaluated_ms=max(times),
        )
        for customer, times in orders.items()
    ]


def buyer(first: int, last: int, orders: int, *, seen: int | None = None) -> UserState:
    return UserState(
        user_id=f"u{first}-{last}-{orders}",
        first_seen_ms=first,
        last_seen_ms=last if seen is None else seen,
        first_order_ms=first,
        last_order_ms=last,
        order_count=orders,
    )


# ---- time parsing -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1997-10-01T00:00:00Z", 875_664_000_000),
        ("1997-10-01T00:00:00+00:00", 875_664_000_000),
        ("1997-10-01T02:00:00+02:00", 875_664_000_000),
        ("1997-10-01T00:00:00", 875_664_000_000),  # no zone: UTC
        ("1997-10-01", 875_664_000_000),
        ("875664000000", 875_664_000_000),
        (" 1997-10-01T00:00:00.123Z ", 875_664_000_123),
    ],
)
def test_as_of_takes_iso_8601_or_epoch_ms(text: str, ms: int) -> None:
    assert parse_time(text) == ms


def test_a_bad_as_of_says_what_it_takes() -> None:
    with pytest.raises(ValueError, match="neither epoch milliseconds nor an ISO-8601 time"):
        parse_time("last tuesday")


def test_times_print_as_utc_iso_8601() -> None:
    assert format_time(875_664_000_000) == "1997-10-01T00:00:00Z"
    assert format_time(875_664_000_123) == "1997-10-01T00:00:00.123Z"
    assert parse_time(format_time(875_664_000_123)) == 875_664_000_123


# ---- choosing the as-of time ----------------------------------------------------------
def test_population_takes_the_buyers_and_the_span_of_all_the_data() -> None:
    states = [buyer(100, 300, 3), buyer(200, 200, 1, seen=900), UserState("browser", 50, 400)]
    population = Population.of(states)
    assert population.buyers == ((100, 300, 3), (200, 200, 1))
    assert (population.oldest_ms, population.newest_ms) == (50, 900)


def test_on_the_stream_clock_the_fit_is_as_of_the_newest_event_time() -> None:
    states = [buyer(100, 300, 3), UserState("browser", 50, 700, evaluated_ms=650)]
    as_of = choose_as_of(Population.of(states), "stream", None, now_ms=10**13)
    assert as_of == AsOf(700, AS_OF_STREAM)
    assert str(as_of).endswith("(stream time: the newest event time in the state)")


def test_on_the_wall_clock_the_fit_is_as_of_now() -> None:
    as_of = choose_as_of(Population.of([buyer(100, 300, 3)]), "wall", None, now_ms=5_000)
    assert as_of == AsOf(5_000, AS_OF_WALL)
    assert str(as_of) == "1970-01-01T00:00:05Z (wall clock: now)"


@pytest.mark.parametrize("clock", ["stream", "wall"])
def test_as_of_chooses_explicitly_on_either_clock(clock: str) -> None:
    as_of = choose_as_of(Population.of([buyer(100, 300, 3)]), clock, 400, now_ms=5_000)
    assert as_of == AsOf(400, AS_OF_OPTION)


def test_the_stream_clock_without_any_event_has_no_time_to_fit_as_of() -> None:
    with pytest.raises(FitRefusedError, match="no stream time to fit as of"):
        choose_as_of(Population.of([]), "stream", None, now_ms=5_000)


# ---- as-of before the last orders ------------------------------------------------------
def test_an_as_of_before_some_buyers_last_order_is_refused_naming_how_many() -> None:
    population = Population.of([buyer(0, 7 * DAY_MS, 2), buyer(0, 9 * DAY_MS, 4), buyer(0, 0, 1)])
    with pytest.raises(FitRefusedError) as refused:
        buyer_summaries(population, AsOf(5 * DAY_MS, AS_OF_OPTION), 7.0)
    message = str(refused.value)
    assert "2 of 3 buyers ordered after the as-of time 1970-01-06T00:00:00Z (--as-of)" in message
    assert "keeps no order history" in message
    assert "fit as of 1970-01-10T00:00:00Z or later" in message


def test_summaries_are_as_of_the_chosen_time() -> None:
    population = Population.of([buyer(0, 7 * DAY_MS, 2), buyer(7 * DAY_MS, 7 * DAY_MS, 1)])
    assert buyer_summaries(population, AsOf(14 * DAY_MS, AS_OF_OPTION), 7.0) == [
        (1, 1.0, 2.0),
        (0, 0.0, 1.0),
    ]


def test_an_order_within_the_wall_clocks_future_skew_counts_as_now() -> None:
    population = Population.of([buyer(0, 7 * DAY_MS + 1_000, 2)])
    assert buyer_summaries(population, AsOf(7 * DAY_MS, AS_OF_WALL), 7.0, 5_000) == [
        (1, (7 * DAY_MS + 1_000) / (7 * DAY_MS), (7 * DAY_MS + 1_000) / (7 * DAY_MS))
    ]
    with pytest.raises(FitRefusedError, match="1 of 1 buyers ordered after"):
        buyer_summaries(population, AsOf(7 * DAY_MS, AS_OF_WALL), 7.0, 500)


# ---- degenerate fits ---------------------------------------------------------------------
def test_ages_beyond_the_data_are_degenerate() -> None:
    population = Population.of([buyer(0, 100 * DAY_MS, 5)])
    as_of = AsOf(10_000 * DAY_MS, AS_OF_WALL)
    [problem] = fit_problems(GOOD, population, as_of)
    assert problem.what == (
        "ages beyond the data: the oldest buyer's age T would be 10,000.0 days but the data "
        "span 100.0 days (1970-01-01T00:00:00Z to 1970-04-11T00:00:00Z), as the as-of time "
        "1997-05-19T00:00:00Z (wall clock: now) is 9,900.0 days after the newest event"
    )
    assert "USERPULSE_CLOCK=stream" in problem.fix and "--as-of" in problem.fix


def test_an_as_of_a_little_after_the_data_is_fine() -> None:
    population = Population.of([buyer(0, 100 * DAY_MS, 5)])
    assert fit_problems(GOOD, population, AsOf(109 * DAY_MS, AS_OF_OPTION)) == []
    assert fit_problems(GOOD, population, AsOf(111 * DAY_MS, AS_OF_OPTION)) != []


def test_an_optimum_on_a_bound_is_degenerate() -> None:
    on_bound = FitResult(BgNbdParams(0.2, 4.0, 4.8e8, 2.0), -10.0, 30, False, ("a",))
    [problem] = fit_problems(on_bound, Population.of([buyer(0, DAY_MS, 2)]), AsOf(DAY_MS, "x"))
    assert problem.what == "the optimum is on a bound of the optimiser (a = 4.8e+08)"


def test_a_runaway_parameter_is_degenerate_even_when_the_optimiser_is_content() -> None:
    data = [(1, 0.5, 10.0)] * 200  # every buyer alike: nothing separates dropout from rate
    result = fit(data)
    assert result.converged  # what the optimiser says …
    population = Population.of([buyer(0, DAY_MS, 2)])
    [problem] = fit_problems(result, population, AsOf(DAY_MS, AS_OF_OPTION))
    assert problem.what == "a parameter ran off towards 0 or infinity"  # … is not the answer


def test_no_convergence_is_degenerate() -> None:
    result = fit([(1, 0.5, 10.0)] * 100 + [(3, 6.0, 9.0)] * 100 + [(0, 0.0, 8.0)] * 100, None, 2)
    assert not result.converged
    problems = fit_problems(result, Population.of([buyer(0, DAY_MS, 2)]), AsOf(DAY_MS, "x"))
    assert problems[-1].what == "the optimiser did not converge in 2 iterations"
    assert problems[-1].refusal().startswith("degenerate fit, nothing was published: ")
    assert problems[-1].refusal().endswith(", or publish anyway with --force")


# ---- the model's JSON ----------------------------------------------------------------------
def test_the_model_json_carries_its_as_of_time_and_old_models_still_decode() -> None:
    model = Model(PAPER, 7.0, 1_700_000_000_000, 2357, -9582.4, 875_577_600_000, AS_OF_STREAM)
    doc = orjson.loads(model.to_json())
    assert (doc["fitted_at"], doc["as_of"], doc["as_of_source"]) == (
        1_700_000_000_000,
        875_577_600_000,
        "stream time",
    )
    assert Model.from_json(model.to_json()) == model
    del doc["as_of"], doc["as_of_source"]  # published before the as-of time was recorded
    old = Model.from_json(orjson.dumps(doc))
    assert (old.as_of_ms, old.as_of_source) == (1_700_000_000_000, AS_OF_WALL)


# ---- the command, on CDNOW's states ----------------------------------------------------------
@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Model]]:
    """The states are CDNOW's calibration period; what would be published is collected."""
    states = cdnow_states()
    models: list[Model] = []
    monkeypatch.setattr(agents.commands.fit, "read_states", lambda settings: iter(states))
    monkeypatch.setattr(agents.commands.fit, "check_consumer_group", lambda settings: None)
    monkeypatch.setattr(
        agents.commands.fit, "publish_model", lambda settings, model: models.append(model)
    )
    yield models


def run_fit(*args: str, clock: str = "stream") -> Result:
    return CliRunner().invoke(main, ["fit", *args], env={"USERPULSE_CLOCK": clock})


def error_line(result: Result) -> str:
    [line] = [line for line in result.output.splitlines() if line.startswith("userpulse: error:")]
    return line


def within_one_percent(params: BgNbdParams) -> bool:
    pairs = [(params.r, PAPER.r), (params.alpha, PAPER.alpha), (params.a, PAPER.a)]
    return all(abs(got / want - 1) < 0.01 for got, want in [*pairs, (params.b, PAPER.b)])


def test_cdnow_on_the_stream_clock_fits_the_paper_as_of_the_stream_time(
    published: list[Model],
) -> None:
    result = run_fit()
    assert result.exit_code == 0, result.output
    assert f"as of {PAPER_AS_OF} (stream time: the newest event time in the state)" in (
        result.output
    )
    [model] = published
    assert within_one_percent(model.params), model.params
    assert (model.as_of_ms, model.as_of_source, model.buyers) == (
        parse_time(PAPER_AS_OF),
        AS_OF_STREAM,
        2357,
    )


def test_cdnow_as_of_the_end_of_week_39_is_an_explicit_choice(published: list[Model]) -> None:
    result = run_fit("--as-of", "1997-10-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "as of 1997-10-01T00:00:00Z (--as-of)" in result.output
    [model] = published
    assert model.as_of_source == AS_OF_OPTION
    assert not within_one_percent(model.params)  # a day later: a = 0.814, b = 2.477


def test_cdnow_on_the_wall_clock_is_refused_in_one_line(published: list[Model]) -> None:
    result = run_fit(clock="wall")
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith(
        "userpulse: error: degenerate fit, nothing was published: ages beyond the data: "
        "the oldest buyer's age T would be "
    )
    assert "(wall clock: now)" in line and "USERPULSE_CLOCK=stream" in line
    assert line.endswith("or publish anyway with --force")
    assert published == []


def test_force_publishes_a_degenerate_fit_with_a_warning(published: list[Model]) -> None:
    result = run_fit("--force", clock="wall")
    assert result.exit_code == 0, result.output
    assert "userpulse: warning: degenerate fit: ages beyond the data" in result.output
    assert len(published) == 1


def test_no_publish_shows_the_problems_and_publishes_nothing(published: list[Model]) -> None:
    result = run_fit("--no-publish", clock="wall")
    assert result.exit_code == 0, result.output
    assert "userpulse: warning: degenerate fit: ages beyond the data" in result.output
    assert published == []


def test_cdnow_as_of_before_the_last_orders_is_refused(published: list[Model]) -> None:
    late = {c for c, d, _ in cdnow_customer_days() if d > "19970630"}
    result = run_fit("--as-of", "1997-06-30")
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"userpulse: error: {len(late)} of 2357 buyers ordered after the as-of time "
        "1997-06-30T00:00:00Z (--as-of) (the last at 1997-09-30T00:00:00Z)"
    )
    assert published == []
