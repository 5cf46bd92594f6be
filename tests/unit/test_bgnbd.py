"""BG/NBD: the paper's CDNOW estimates, and every per-user number checked
against an independent computation (scipy's hyp2f1, numerical integration
over the dropout probability, and the lifetimes package)."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from streams import bgnbd, bgnbd_fit
from streams.bgnbd import BgNbdError, BgNbdParams
from streams.policy import DAY_MS

#: Fader, Hardie & Lee (2005), CDNOW, 2357 customers, 39-week calibration period.
PAPER = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PAPER_LL = -9582.4
WEEK_MS = 7 * DAY_MS
T0 = 1_700_006_400_000


def cdnow_path() -> Path:
    """The CDNOW calibration summary shipped in the lifetimes wheel (MIT),
    located without importing lifetimes (whose import pulls in autograd)."""
    try:
        dist = importlib.metadata.distribution("lifetimes")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "lifetimes (a dev extra: make install) is not installed: it ships the CDNOW data"
        )
    return Path(str(dist.locate_file("lifetimes/datasets/cdnow_customers_summary.csv")))


@pytest.fixture(scope="module")
def cdnow() -> list[tuple[int, float, float]]:
    with cdnow_path().open(newline="") as f:
        return [
            (int(r["frequency"]), float(r["recency"]), float(r["T"])) for r in csv.DictReader(f)
        ]


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: list[tuple[int, float, float]]) -> bgnbd_fit.FitResult:
    return bgnbd_fit.fit(cdnow)


# ---- the paper's estimates -------------------------------------------------------
def test_cdnow_data_is_the_papers_sample(cdnow: list[tuple[int, float, float]]) -> None:
    assert len(cdnow) == 2357
    assert sum(x for x, _, _ in cdnow) == 2457  # repeat transactions in weeks 1–39
    assert max(age for _, _, age in cdnow) <= 39


def test_fit_reproduces_the_papers_cdnow_estimates(cdnow_fit: bgnbd_fit.FitResult) -> None:
    p = cdnow_fit.params
    assert cdnow_fit.converged
    assert (round(p.r, 3), round(p.alpha, 3), round(p.a, 3), round(p.b, 3)) == (
        PAPER.r,
        PAPER.alpha,
        PAPER.a,
        PAPER.b,
    )
    assert cdnow_fit.log_likelihood == pytest.approx(PAPER_LL, abs=0.5)


def test_fit_does_not_depend_on_the_starting_point(
    cdnow: list[tuple[int, float, float]], cdnow_fit: bgnbd_fit.FitResult
) -> None:
    other = bgnbd_fit.fit(cdnow, initial=BgNbdParams(r=3.0, alpha=0.5, a=5.0, b=0.2))
    assert other.converged
    assert other.log_likelihood == pytest.approx(cdnow_fit.log_likelihood, abs=1e-4)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(other.params, name) == pytest.approx(
            getattr(cdnow_fit.params, name), rel=1e-4
        )


def test_log_likelihood_matches_the_unlogged_formula(
    cdnow: list[tuple[int, float, float]],
) -> None:
    def direct(p: BgNbdParams, x: int, t_x: float, age: float) -> float:
        r, alpha, a, b = p.r, p.alpha, p.a, p.b
        beta = math.exp(
            math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b) - math.lgamma(a + b + x)
        )
        gamma = math.exp(math.lgamma(r + x) - math.lgamma(r)) * alpha**r
        alive = (alpha + age) ** -(r + x)
        died = a / (b + x - 1) * (alpha + t_x) ** -(r + x) if x > 0 else 0.0
        return math.log(beta * gamma * (alive + died))

    expected = sum(direct(PAPER, *row) for row in cdnow)
    assert bgnbd_fit.log_likelihood(PAPER, cdnow) == pytest.approx(expected, rel=1e-12)
    assert bgnbd_fit.log_likelihood(PAPER, cdnow) == pytest.approx(PAPER_LL, abs=1.0)


def test_fit_gradient_matches_finite_differences(cdnow: list[tuple[int, float, float]]) -> None:
    """The analytic gradient the optimiser follows (over log-parameters)."""
    customers = bgnbd_fit._Customers.of(cdnow)
    for theta in (np.log([0.243, 4.414, 0.793, 2.426]), np.array([0.5, -0.3, 1.2, -0.8])):
        _, gradient = customers.log_likelihood(theta)
        for i in range(4):
            step = np.zeros(4)
            step[i] = 1e-6
            up, _ = customers.log_likelihood(theta + step)
            down, _ = customers.log_likelihood(theta - step)
            assert gradient[i] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-4)


def _simulated(
    truth: BgNbdParams, customers: int, seed: int, quantum: float = 0.0
) -> list[tuple[int, float, float]]:
    """Buyers drawn from the BG/NBD process itself (``quantum`` > 0: t_x and
    T rounded down to multiples of it, so many buyers share a summary)."""
    rng = np.random.default_rng(seed)
    data: list[tuple[int, float, float]] = []
    for _ in range(customers):
        rate = rng.gamma(truth.r, 1 / truth.alpha)
        dropout = rng.beta(truth.a, truth.b)
        age = float(rng.uniform(26, 52))
        x, t_x, t = 0, 0.0, 0.0
        while rate > 0:
            t += rng.exponential(1 / rate)
            if t > age:
                break
            x, t_x = x + 1, t
            if rng.random() < dropout:
                break
        if quantum:
            t_x, age = t_x // quantum * quantum, age // quantum * quantum
        data.append((x, t_x, age))
    return data


def test_fit_recovers_the_parameters_that_generated_the_data() -> None:
    """Simulated buyers: the true parameters sit inside the 99% likelihood-ratio
    region around the estimate (2·ΔLL < χ²₄(0.99) = 13.28)."""
    truth = BgNbdParams(r=0.8, alpha=6.0, a=0.6, b=3.0)
    data = _simulated(truth, 4000, seed=20050401)
    result = bgnbd_fit.fit(data)
    assert result.converged
    assert 0 <= 2 * (result.log_likelihood - bgnbd_fit.log_likelihood(truth, data)) < 13.28


def test_fit_aggregates_identical_customers() -> None:
    """Four-week summaries: thousands of buyers, a few hundred distinct rows.
    The fit counts each distinct row once with its multiplicity; its
    log-likelihood must equal the one summed over every buyer."""
    rows = _simulated(BgNbdParams(r=0.8, alpha=6.0, a=0.6, b=3.0), 4000, seed=7, quantum=4.0)
    assert len(set(rows)) < len(rows) / 4
    once = bgnbd_fit.fit(rows)
    assert once.converged
    assert once.log_likelihood == pytest.approx(bgnbd_fit.log_likelihood(once.params, rows))


def _ordered_by_the_day(seed: int, now_ms: int, as_of_ms: int) -> list[tuple[int, float, float]]:
    """600 buyers simulated as tests/e2e/test_churn_model.py feeds a worker:
    Poisson buying and dropout after repeats, at most 14 orders each, in weeks."""
    rng = random.Random(seed)
    week = 7 * DAY_MS
    data = []
    for _ in range(600):
        first = at = now_ms - rng.randint(150, 500) * DAY_MS
        rate_per_day, dropout = rng.gammavariate(1.0, 1 / 5), rng.betavariate(0.5, 1.0)
        last, count = at, 0
        for n in range(14):
            last, count = at, count + 1
            at += int(rng.expovariate(rate_per_day) * DAY_MS) + 1
            if at > now_ms - DAY_MS or (n > 0 and rng.random() < dropout):
                break
        data.append((count - 1, (last - first) / week, (as_of_ms - first) / week))
    return data


def test_fit_stopped_by_machine_precision_at_the_optimum_has_converged() -> None:
    """With ftol at 1e-15, L-BFGS-B can end in its line search (success False)
    where the objective is flat to the last bit: this data did so, after 21
    iterations. The gradient there is zero, so the fit has converged — it
    used to be refused as "did not converge" (a flaky end-to-end test)."""
    now = 1_800_000_000_000 + 259 * 3_600_037
    data = _ordered_by_the_day(7, now, now + 259 * 997 * 13)
    result = bgnbd_fit.fit(data)
    assert result.converged
    p = result.params
    for step in (1e-4, -1e-4):  # and it is the optimum: every nudge is worse
        for name in ("r", "alpha", "a", "b"):
            nudged = dataclasses.replace(p, **{name: getattr(p, name) * (1 + step)})
            assert bgnbd_fit.log_likelihood(nudged, data) < result.log_likelihood


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no customer has a repeat purchase"),
        ([(0, 0.0, 10.0)] * 5, "no customer has a repeat purchase"),
        ([(2, 12.0, 10.0)], "t_x ≤ T"),
        ([(1.5, 1.0, 10.0)], "whole numbers"),
        ([(1, 1.0)], "triples"),
        ([(1, 1.0, math.inf)], "finite"),
    ],
)
def test_fit_rejects_data_it_cannot_use(rows: list[tuple[float, ...]], message: str) -> None:
    with pytest.raises(BgNbdError, match=message):
        bgnbd_fit.fit(rows)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_parameters_must_be_positive_numbers(bad: float) -> None:
    with pytest.raises(BgNbdError, match="alpha"):
        BgNbdParams(r=1.0, alpha=bad, a=1.0, b=1.0)


# ---- summary ------------------------------------------------------------------------
def test_summary_of_a_state_in_weeks_and_days() -> None:
    first, last, now = T0, T0 + 3 * WEEK_MS, T0 + 10 * WEEK_MS
    assert bgnbd.summary(first, last, 4, now) == (3, 3.0, 10.0)
    assert bgnbd.summary(first, last, 4, now, unit_days=1.0) == (3, 21.0, 70.0)


def test_summary_of_non_buyers_and_one_time_buyers() -> None:
    assert bgnbd.summary(None, None, 0, T0) is None
    assert bgnbd.summary(T0, T0, 1, T0 + 2 * WEEK_MS) == (0, 0.0, 2.0)


def test_summary_when_now_lags_the_last_order() -> None:
    """Stream time may trail an order's event time: T is never below t_x."""
    assert bgnbd.summary(T0, T0 + 2 * WEEK_MS, 3, T0 + WEEK_MS) == (2, 2.0, 2.0)


# ---- P(alive) -----------------------------------------------------------------------
def p_alive_by_integration(p: BgNbdParams, x: int, t_x: float, age: float) -> float:
    """P(alive) from the posterior: the Gamma(r, α) rate integrated out in
    closed form, the Beta(a, b) dropout probability numerically."""
    ends = (p.a - 1, p.b - 1)
    alive, _ = integrate.quad(lambda q: (1 - q) ** x, 0, 1, weight="alg", wvar=ends)
    died, _ = integrate.quad(lambda q: q * (1 - q) ** (x - 1), 0, 1, weight="alg", wvar=ends)
    alive *= (p.alpha + age) ** -(p.r + x)
    died *= (p.alpha + t_x) ** -(p.r + x)
    return float(alive / (alive + died))


CUSTOMERS = [(2, 30.43, 38.86), (1, 1.71, 38.86), (4, 32.71, 38.86), (7, 35.0, 38.0),
             (7, 5.0, 38.0), (29, 38.43, 38.86), (1, 20.0, 20.1), (12, 2.0, 39.0)]  # fmt: skip


@pytest.mark.parametrize(("x", "t_x", "age"), CUSTOMERS)
def test_p_alive_matches_the_posterior(x: int, t_x: float, age: float) -> None:
    assert bgnbd.p_alive(PAPER, x, t_x, age) == pytest.approx(
        p_alive_by_integration(PAPER, x, t_x, age), rel=1e-7
    )


def test_p_alive_is_one_without_repeat_purchases() -> None:
    """The paper's formula has δ(x>0): in BG/NBD dropout can only follow a
    repeat purchase, so a one-time buyer is alive however long ago."""
    assert bgnbd.p_alive(PAPER, 0, 0.0, 1000.0) == 1.0
    assert bgnbd.p_alive_at_ms(PAPER, T0, T0, 1, T0 + 1000 * WEEK_MS) == 1.0


def test_p_alive_falls_while_the_buyer_stays_away() -> None:
    values = [bgnbd.p_alive(PAPER, 3, 10.0, age) for age in (10.0, 20.0, 40.0, 80.0)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.8 > 0.2 > values[-1]
    assert bgnbd.p_alive(PAPER, 500, 1.0, 1e9) == 0.0  # no overflow


def test_p_alive_at_ms_of_a_state() -> None:
    first, last = T0, T0 + 30.43 * WEEK_MS
    assert bgnbd.p_alive_at_ms(PAPER, None, None, 0, T0) is None
    assert bgnbd.p_alive_at_ms(
        PAPER, first, int(last), 3, int(T0 + 38.86 * WEEK_MS)
    ) == pytest.approx(bgnbd.p_alive(PAPER, 2, 30.43, 38.86), rel=1e-9)


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.7])
@pytest.mark.parametrize(("x", "t_x"), [(1, 1.71), (2, 30.43), (7, 5.0), (29, 38.43)])
def test_the_time_p_alive_falls_below_a_threshold(threshold: float, x: int, t_x: float) -> None:
    age = bgnbd.alive_below_at(PAPER, x, t_x, threshold)
    assert age is not None and age >= t_x
    if age > t_x:
        assert bgnbd.p_alive(PAPER, x, t_x, age) == pytest.approx(threshold, rel=1e-9)
        assert bgnbd.p_alive(PAPER, x, t_x, age * 0.999) > threshold
    else:  # already below right after the last purchase
        assert bgnbd.p_alive(PAPER, x, t_x, t_x) <= threshold


def test_the_time_p_alive_falls_below_in_milliseconds() -> None:
    last = T0 + 3 * WEEK_MS
    at = bgnbd.alive_below_at_ms(PAPER, T0, last, 4, 0.3)
    assert at is not None
    here, before = (bgnbd.p_alive_at_ms(PAPER, T0, last, 4, ms) for ms in (at, at - 1))
    assert here is not None and before is not None
    assert here == pytest.approx(0.3, abs=1e-9) and here < 0.3 <= before
    age = bgnbd.alive_below_at(PAPER, 3, 3.0, 0.3)
    assert age is not None and at == T0 + math.ceil(age * WEEK_MS)  # the closed form, rounded up
    assert bgnbd.alive_below_at_ms(PAPER, T0, T0, 1, 0.3) is None  # one purchase: never
    assert bgnbd.alive_below_at_ms(PAPER, None, None, 0, 0.3) is None  # no purchase
    assert bgnbd.alive_below_at_ms(PAPER, T0, last, 4, 0.0) is None  # rule off


def first_ms_below(p: BgNbdParams, first: int, last: int, count: int, threshold: float) -> int:
    """What alive_below_at_ms must return, the slow way: a galloping search
    for the first millisecond from the last order on whose P(alive) is below."""

    def below(at: int) -> bool:
        value = bgnbd.p_alive_at_ms(p, first, last, count, at)
        return value is not None and value < threshold

    if below(last):
        return last
    low, high = last, last + 1
    while not below(high):
        low, high = high, last + 2 * (high - last)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if below(mid) else (mid, high)
    return high


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        BgNbdParams,
        r=st.floats(0.05, 10),
        alpha=st.floats(0.1, 50),
        a=st.floats(0.05, 20),
        b=st.floats(0.05, 50),
    ),
    st.integers(2, 60),
    st.integers(0, 400 * DAY_MS),
    st.floats(1e-6, 1.0) | st.sampled_from([0.0, 1e-9, 0.3, 0.999999999999, 1.0]),
)
def test_the_millisecond_is_the_first_one_p_alive_is_below_the_threshold(
    p: BgNbdParams, count: int, span_ms: int, threshold: float
) -> None:
    """Exact against p_alive_at_ms itself: P(alive) is below the threshold at
    the millisecond given and not the one before (unless that is before the
    last order, where P(alive) is what it is at the last order)."""
    last = T0 + span_ms
    at = bgnbd.alive_below_at_ms(p, T0, last, count, threshold)
    if threshold <= 0:
        assert at is None
        return
    assert at is not None
    assert at == first_ms_below(p, T0, last, count, threshold)
    here, before = (bgnbd.p_alive_at_ms(p, T0, last, count, ms) for ms in (at, at - 1))
    assert here is not None and before is not None
    assert here < threshold
    assert at == last or before >= threshold


def test_a_threshold_beyond_any_time_has_no_millisecond() -> None:
    """P(alive) would cross after e^700 weeks, or after more milliseconds
    than a float holds: no time at all."""
    slow = BgNbdParams(r=0.01, alpha=10.0, a=0.05, b=50.0)
    assert bgnbd.alive_below_at(slow, 1, 0.0, 5e-324) is None
    assert bgnbd.alive_below_at_ms(slow, T0, T0 + WEEK_MS, 2, 5e-324) is None
    assert bgnbd.alive_below_at(slow, 1, 0.0, 1e-300) is not None
    assert bgnbd.alive_below_at_ms(slow, T0, T0, 2, 1e-300) is None


# ---- the hypergeometric function ---------------------------------------------------
GRID = [-0.9, 0.3, 1.7, 4.2]
Z = [-5.0, -1.5, -0.7, -0.2, 0.1, 0.45, 0.55, 0.8, 0.95, 0.995, 0.99999]


@pytest.mark.parametrize("z", Z)
def test_hyp2f1_matches_scipy(z: float) -> None:
    for a in GRID:
        for b in GRID:
            for c in [-2.5, -0.4, 0.6, 1.3, 3.9, 8.2]:
                expected = float(special.hyp2f1(a, b, c, z))
                assert bgnbd.hyp2f1(a, b, c, z) == pytest.approx(expected, rel=1e-9, abs=1e-12), (
                    a,
                    b,
                    c,
                    z,
                )


@pytest.mark.parametrize("z", [0.3, 0.7, 0.95, 0.9999])
@pytest.mark.parametrize("excess", [-2.0, -1.0, 0.0, 1.0, 3.0, 1.0 + 2e-6, -1e-7])
def test_hyp2f1_where_c_minus_a_minus_b_is_an_integer(z: float, excess: float) -> None:
    """The 1 − z transformation has gamma poles there (a psi-function limit);
    the interpolation across them stays accurate."""
    a, b = 0.37, 1.21
    c = a + b + excess
    expected = float(special.hyp2f1(a, b, c, z))
    assert bgnbd.hyp2f1(a, b, c, z) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("z", [0.2, 0.6, 0.9, 0.99, 0.999])
@pytest.mark.parametrize(
    ("r", "a", "b", "x"),
    [(0.243, 0.793, 2.426, 0), (0.243, 0.793, 2.426, 3), (0.243, 0.793, 2.426, 300),
     (2.0, 4.0, 150.0, 1), (0.1, 0.2, 60.0, 0), (5.0, 1.5, 0.7, 20), (1.0, 1.0 + 1e-7, 1.0, 2)],
)  # fmt: skip
def test_hyp2f1_in_the_bgnbd_regime_matches_scipy(
    z: float, r: float, a: float, b: float, x: int
) -> None:
    """The arguments expected_purchases uses: (a+b−1−r, a−1; a+b+x−1; z) —
    large c for frequent buyers, large b for loyal populations."""
    args = (a + b - 1 - r, a - 1, a + b + x - 1, z)
    assert bgnbd.hyp2f1(*args) == pytest.approx(float(special.hyp2f1(*args)), rel=1e-8)


def test_hyp2f1_special_values() -> None:
    assert bgnbd.hyp2f1(1.0, 1.0, 2.0, -0.5) == pytest.approx(math.log(1.5) / 0.5)
    assert bgnbd.hyp2f1(-3.0, 2.0, 1.5, 0.8) == pytest.approx(special.hyp2f1(-3, 2, 1.5, 0.8))
    assert bgnbd.hyp2f1(0.5, 0.25, 2.0, 1.0) == pytest.approx(special.hyp2f1(0.5, 0.25, 2, 1))
    assert bgnbd.hyp2f1(2.0, 3.0, 4.0, 0.0) == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.0, 1.0, -2.0, 0.5), "non-positive integer"),
        ((1.0, 1.0, 2.0, 1.5), "z ≤ 1"),
        ((1.0, 2.0, 2.5, 1.0), "diverges"),
        ((1.0, math.nan, 2.0, 0.5), "finite"),
    ],
)
def test_hyp2f1_refuses_what_it_cannot_compute(
    args: tuple[float, float, float, float], message: str
) -> None:
    with pytest.raises(BgNbdError, match=message):
        bgnbd.hyp2f1(*args)


# ---- expected purchases ------------------------------------------------------------
def expected_by_integration(p: BgNbdParams, t: float, x: int, t_x: float, age: float) -> float:
    """E[Y(t) | x, t_x, T] = P(alive) · E[(1 − ((α+T)/(α+T+q·t))^(r+x)) / q]
    over the posterior dropout probability q ~ Beta(a, b+x) of a live buyer."""
    k = p.r + x
    u = t / (p.alpha + age)

    def purchases_before_dropout(q: float) -> float:
        return k * u if q == 0 else -math.expm1(-k * math.log1p(q * u)) / q

    # the Beta density's singular ends go into quad's algebraic weight; a
    # steep (1 − q)^(b+x−1) with b+x ≥ 1 integrates better as part of the function
    power = p.b + x - 1
    inner, outer = (power, 0.0) if power >= 0 else (0.0, power)

    def integrand(q: float) -> float:
        return purchases_before_dropout(q) * math.pow(1 - q, inner)

    total, _ = integrate.quad(
        integrand, 0, 1, weight="alg", wvar=(p.a - 1, outer), limit=200, epsabs=0, epsrel=1e-12
    )
    norm = special.beta(p.a, p.b + x)
    return float(bgnbd.p_alive(p, x, t_x, age) * total / norm)


@pytest.mark.parametrize("t", [1.0, 13.0, 39.0, 52.0, 520.0])
@pytest.mark.parametrize(("x", "t_x", "age"), [*CUSTOMERS, (0, 0.0, 38.86), (0, 0.0, 0.5)])
def test_expected_purchases_match_the_posterior_integral(
    t: float, x: int, t_x: float, age: float
) -> None:
    assert bgnbd.expected_purchases(PAPER, t, x, t_x, age) == pytest.approx(
        expected_by_integration(PAPER, t, x, t_x, age), rel=1e-7
    )


@pytest.mark.parametrize(
    "params",
    [BgNbdParams(0.5, 10.0, 1.0, 3.0), BgNbdParams(0.5, 10.0, 1.0 + 3e-5, 3.0),
     BgNbdParams(2.0, 3.0, 4.0, 150.0), BgNbdParams(0.3, 2.0, 0.4, 0.6)],
)  # fmt: skip
@pytest.mark.parametrize(("x", "t_x", "age"), [(0, 0.0, 5.0), (3, 4.0, 9.0), (60, 50.0, 52.0)])
def test_expected_purchases_for_other_populations(
    params: BgNbdParams, x: int, t_x: float, age: float
) -> None:
    """Including a = 1 (where the formula's 1/(a−1) is a removable
    singularity) and a + b < 1."""
    for t in (2.0, 30.0, 300.0):
        assert bgnbd.expected_purchases(params, t, x, t_x, age) == pytest.approx(
            expected_by_integration(params, t, x, t_x, age), rel=1e-6
        )


def test_expected_purchases_rise_with_time_from_zero() -> None:
    values = [bgnbd.expected_purchases(PAPER, t, 2, 30.43, 38.86) for t in (0, 1, 5, 20, 80)]
    assert values[0] == 0.0
    assert values == sorted(values)


def test_cdnow_customer_one() -> None:
    """Customer 1 of CDNOW (x = 2, t_x = 30.43, T = 38.86) under the paper's
    estimates: P(alive) ≈ 0.727 and ≈ 1.226 purchases in the next 39 weeks."""
    assert bgnbd.p_alive(PAPER, 2, 30.43, 38.86) == pytest.approx(0.7266, abs=5e-4)
    assert bgnbd.expected_purchases(PAPER, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-3)


def test_agrees_with_lifetimes_beta_geo_fitter(cdnow_fit: bgnbd_fit.FitResult) -> None:
    pd = pytest.importorskip("pandas")
    lifetimes = pytest.importorskip("lifetimes")
    fitter = lifetimes.BetaGeoFitter()
    p = cdnow_fit.params
    fitter.params_ = pd.Series({"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b})
    for x, t_x, age in CUSTOMERS:
        theirs = np.ravel(fitter.conditional_probability_alive(x, t_x, age))[0]
        assert bgnbd.p_alive(p, x, t_x, age) == pytest.approx(float(theirs), rel=1e-9)
        for t in (1.0, 39.0, 104.0):
            ours = bgnbd.expected_purchases(p, t, x, t_x, age)
            theirs = fitter.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, age)
            assert ours == pytest.approx(float(np.ravel(theirs)[0]), rel=1e-8)


# ---- expected next purchase ---------------------------------------------------------
@pytest.mark.parametrize(("x", "t_x", "age"), [(2, 30.43, 38.86), (12, 2.0, 3.0), (0, 0.0, 1.0)])
def test_expected_next_purchase_is_when_one_purchase_is_expected(
    x: int, t_x: float, age: float
) -> None:
    days = bgnbd.expected_next_purchase_days(PAPER, x, t_x, age, horizon_days=3650.0)
    assert days is not None
    assert bgnbd.expected_purchases(PAPER, days / 7, x, t_x, age) >= 1.0 - 1e-9
    assert bgnbd.expected_purchases(PAPER, (days - 0.01) / 7, x, t_x, age) <= 1.0 + 1e-9


def test_expected_next_purchase_in_days_units() -> None:
    """The same customer and population expressed in days give the same date."""
    in_days = BgNbdParams(PAPER.r, PAPER.alpha * 7, PAPER.a, PAPER.b)
    weeks = bgnbd.expected_next_purchase_days(PAPER, 12, 2.0, 3.0)
    days = bgnbd.expected_next_purchase_days(in_days, 12, 14.0, 21.0, unit_days=1.0)
    assert weeks is not None and days is not None
    assert days == pytest.approx(weeks, abs=0.02)


def test_no_expected_next_purchase_within_the_horizon() -> None:
    """A lapsed buyer (one purchase long ago, P(alive) low) is not expected back within a year."""
    assert bgnbd.expected_next_purchase_days(PAPER, 1, 1.71, 38.86) is None
    assert bgnbd.expected_next_purchase_days(PAPER, 2, 30.43, 38.86, horizon_days=30) is None
