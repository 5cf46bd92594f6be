"""The BG/NBD churn model: is a buyer still "alive", and what will they buy next?

Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An
Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275–284.
docs/churn-model.md explains the model, the units and how userpulse uses it.

While alive, a customer buys at a Poisson rate λ; after each *repeat*
purchase they drop out for good with probability p. Across customers
λ ~ Gamma(r, α) and p ~ Beta(a, b). A customer is summarised by
``(x, t_x, T)``: repeat purchases, the time of the last purchase and the
time "now", both measured from the first purchase, in one time unit (weeks
in the paper; ``unit_days`` here).

Two halves, with different costs:

- **per user** (:func:`summary`, :func:`p_alive`, :func:`expected_purchases`,
  :func:`expected_next_purchase_days`, :func:`alive_below_at`, and their
  millisecond-based wrappers) — plain ``math``, a few microseconds a call,
  fit for a worker's event or timer path;
- **population** (:func:`log_likelihood`, :func:`fit`) — numpy and scipy
  over every buyer's summary, run by ``userpulse fit``. scipy is imported
  only there, so a worker that merely scores users never loads it.

Pure: no I/O, no clock; time always comes in as an argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.special import hyp2f1 as _scipy_hyp2f1

from streams.errors import UserpulseError
from streams.policy import DAY_MS

#: Removable singularities (a = 1 or a+b+x−1 = 0 in the conditional
#: expectation) are bridged by a straight line through points this far
#: either side.
_PARAM_GAP: Final = 1e-4
#: The next-purchase search stops at this |E[Y(t)] − 1| or after this many steps.
_ROOT_EXCESS: Final = 1e-9
_ROOT_STEPS: Final = 100
#: Log-parameters are kept within ±this during the fit (e^20 ≈ 5e8).
_LOG_BOUND: Final = 20.0


class BgNbdError(UserpulseError):
    """The model cannot answer: invalid parameters or data, or a value with
    no finite real result."""


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Population parameters: λ ~ Gamma(shape ``r``, rate ``alpha``) and
    p ~ Beta(``a``, ``b``). ``alpha`` is in the time unit of the data it was
    fitted on (α in days = 7 × α in weeks); the others have no unit."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise BgNbdError(
                    f"BG/NBD parameter {name} must be a positive number, got {value!r}"
                )


@dataclass(frozen=True, slots=True)
class FitResult:
    """What :func:`fit` found: the parameters, the maximised log-likelihood
    (the paper's LL, summed over customers), the optimiser's iterations, and
    whether it converged (the optimiser succeeded and no parameter sits on
    its bound); ``on_bound`` names the parameters that ended on a bound of
    the search (e^±20), where the data could not pin them down."""

    params: BgNbdParams
    log_likelihood: float
    iterations: int
    converged: bool
    on_bound: tuple[str, ...] = ()


# ---- per user: summary ------------------------------------------------------------
def summary(
    first_order_ms: int | None,
    last_order_ms: int | None,
    order_count: int,
    now_ms: int,
    unit_days: float = 7.0,
) -> tuple[int, float, float] | None:
    """``(x, t_x, T)`` of a buyer at ``now_ms``, times in units of ``unit_days``.

    x = order_count − 1 (repeat purchases), t_x = last − first order,
    T = now − first order (never less than t_x, so a ``now`` that lags the
    last order — stream time — is taken as the last order). None for a user
    who has not ordered.
    """
    if first_order_ms is None or order_count <= 0:
        return None
    if unit_days <= 0:
        raise BgNbdError(f"unit_days must be positive, got {unit_days!r}")
    unit_ms = unit_days * DAY_MS
    last = first_order_ms if last_order_ms is None else max(last_order_ms, first_order_ms)
    x = order_count - 1
    t_x = (last - first_order_ms) / unit_ms if x > 0 else 0.0
    age = max(now_ms - first_order_ms, last - first_order_ms) / unit_ms
    return x, t_x, age


# ---- per user: P(alive) ------------------------------------------------------------
def p_alive(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T), as derived for the BG/NBD in Hardie's note
    "Computing P(alive) using the BG/NBD model" (brucehardie.com/notes/021)::

        1 / (1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))

    Exactly 1 for x = 0: in BG/NBD a customer can only drop out right after
    a repeat purchase, so one who never repeated is alive by assumption.
    """
    if x <= 0:
        return 1.0
    log_odds = math.log(params.a / (params.b + x - 1)) + (params.r + x) * math.log(
        (params.alpha + T) / (params.alpha + t_x)
    )
    return _logistic(-log_odds)


def alive_below_at(params: BgNbdParams, x: int, t_x: float, threshold: float) -> float | None:
    """The age T (in the data's unit) from which P(alive | x, t_x, T) is at
    or below ``threshold`` — :func:`p_alive` solved for T; never before t_x.

    None when it never gets there: x = 0 (P(alive) stays 1) or a threshold
    ≤ 0. P(alive) only falls as T grows while no purchase comes.
    """
    if x <= 0 or threshold <= 0:
        return None
    if threshold >= 1:
        return t_x
    log_ratio = (math.log(1 / threshold - 1) + math.log((params.b + x - 1) / params.a)) / (
        params.r + x
    )
    if log_ratio > 700:
        return None  # beyond any time a float can hold
    return max(t_x, (params.alpha + t_x) * math.exp(log_ratio) - params.alpha)


# ---- per user: expected purchases ---------------------------------------------------
def expected_purchases(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T]: repeat purchases expected in the next ``t`` units
    — the paper's eq. (10)::

        (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x; a+b+x−1; z)]
        ───────────────────────────────────────────────────────────────────────
                  1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)

    with z = t/(α+T+t). It is evaluated in the Euler-transformed form
    (1−z)^(a−1) · ₂F₁(a+b−1−r, a−1; a+b+x−1; z) for the bracketed product
    (Fader & Hardie's fix for the "#NUM!" overflow with large x); the
    removable singularities at a = 1 and a+b+x−1 = 0 are bridged.
    """
    if t <= 0:
        return 0.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)

    def at(a_: float, b_: float) -> float:
        c = a_ + b_ + x - 1
        g = math.pow(1 - z, a_ - 1) * hyp2f1(a_ + b_ - 1 - r, a_ - 1, c, z)
        return c * (1 - g) / (a_ - 1)

    def bridged_b(a_: float) -> float:
        return _bridge(lambda b_: at(a_, b_), b, 1 - a_ - x, _PARAM_GAP)

    conditional = _bridge(bridged_b, a, 1.0, _PARAM_GAP)
    return p_alive(params, x, t_x, T) * conditional


def expected_next_purchase_days(
    params: BgNbdParams,
    x: int,
    t_x: float,
    T: float,
    unit_days: float = 7.0,
    horizon_days: float = 365.0,
    tolerance_days: float = 0.01,
) -> float | None:
    """Days from now until one more purchase is *expected*: the t at which
    E[Y(t) | x, t_x, T] reaches 1, to within ``tolerance_days``.

    A point estimate for the profile's "expected next-order date", not a
    promise: it folds in the chance that the customer has left. None when
    fewer than one purchase is expected within ``horizon_days``. E[Y(t)]
    rises with t, so the root is bracketed in [0, horizon] and found by
    the Illinois variant of regula falsi (a handful of evaluations where
    bisection needs ~15).
    """
    if unit_days <= 0 or horizon_days <= 0 or tolerance_days <= 0:
        raise BgNbdError("unit_days, horizon_days and tolerance_days must be positive")

    def excess(days: float) -> float:
        return expected_purchases(params, days / unit_days, x, t_x, T) - 1.0

    low, high = 0.0, horizon_days
    f_low, f_high = -1.0, excess(high)  # E[Y(0)] = 0
    if f_high < 0:
        return None
    kept = 0  # +1: the last step moved the high end, −1: the low end
    for _ in range(_ROOT_STEPS):
        if high - low <= tolerance_days:
            break
        mid = high - f_high * (high - low) / (f_high - f_low)
        f_mid = excess(mid)
        if abs(f_mid) <= _ROOT_EXCESS:
            return mid
        if f_mid > 0:
            high, f_high = mid, f_mid
            f_low = f_low / 2 if kept > 0 else f_low  # the Illinois step
            kept = 1
        else:
            low, f_low = mid, f_mid
            f_high = f_high / 2 if kept < 0 else f_high
            kept = -1
    return high


# ---- per user: on a state's millisecond fields -----------------------------------
def p_alive_at_ms(
    params: BgNbdParams,
    first_order_ms: int | None,
    last_order_ms: int | None,
    order_count: int,
    now_ms: int,
    unit_days: float = 7.0,
) -> float | None:
    """P(alive) of a buyer at ``now_ms`` (None for a user who has not ordered);
    ``unit_days`` must be the unit ``params`` were fitted in."""
    data = summary(first_order_ms, last_order_ms, order_count, now_ms, unit_days)
    return None if data is None else p_alive(params, *data)


def alive_below_at_ms(
    params: BgNbdParams,
    first_order_ms: int | None,
    last_order_ms: int | None,
    order_count: int,
    threshold: float,
    unit_days: float = 7.0,
) -> int | None:
    """The first millisecond at which P(alive) is at or below ``threshold`` if
    no further order comes (None: never — not a repeat buyer, or threshold 0).
    The closed form of what a timer would otherwise find by bisection."""
    data = summary(first_order_ms, last_order_ms, order_count, 0, unit_days)
    if data is None or first_order_ms is None:
        return None
    x, t_x, _ = data
    age = alive_below_at(params, x, t_x, threshold)
    if age is None:
        return None
    return first_order_ms + math.ceil(age * unit_days * DAY_MS)


# ---- the Gaussian hypergeometric function ------------------------------------------
def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """₂F₁(a, b; c; z) for real arguments and z ≤ 1 (scipy.special.hyp2f1).

    Raises :class:`BgNbdError` where it has no finite real value: c a
    non-positive integer, z > 1, z = 1 with c − a − b ≤ 0, or a result
    scipy cannot give (inf or nan)."""
    if not all(math.isfinite(v) for v in (a, b, c, z)):
        raise BgNbdError(f"hyp2f1 needs finite arguments, got {(a, b, c, z)!r}")
    if c <= 0 and c == math.floor(c):
        raise BgNbdError(f"hyp2f1 is undefined for c = {c!r} (a non-positive integer)")
    if z > 1:
        raise BgNbdError(f"hyp2f1 is real only for z ≤ 1, got z = {z!r}")
    if z == 1 and c - a - b <= 0:
        raise BgNbdError(f"hyp2f1 diverges at z = 1 when c − a − b ≤ 0 ({(a, b, c)!r})")
    value = float(_scipy_hyp2f1(a, b, c, z))
    if not math.isfinite(value):
        raise BgNbdError(f"hyp2f1({a!r}, {b!r}; {c!r}; {z!r}) has no finite value here")
    return value


def _bridge(f: Callable[[float], float], v: float, singular: float, gap: float) -> float:
    """f(v), or — within ``gap`` of a removable singularity — the straight
    line through f(singular − gap) and f(singular + gap), evaluated at v."""
    if abs(v - singular) >= gap:
        return f(v)
    low, high = f(singular - gap), f(singular + gap)
    return low + (high - low) * (v - singular + gap) / (2 * gap)


def _logistic(v: float) -> float:
    """1 / (1 + e^−v) without overflow."""
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


# ---- population: likelihood and fit ------------------------------------------------
FloatArray = NDArray[np.float64]


def log_likelihood(params: BgNbdParams, data: Iterable[tuple[int, float, float]]) -> float:
    """The BG/NBD log-likelihood of customers ``(x, t_x, T)``, summed — the
    paper's form ln A₁ + ln A₂ + ln(e^{ln A₃} + δ(x>0) e^{ln A₄}), with the
    last term as a log-sum-exp and the gammas as lgamma::

        A₁ = Γ(r+x) α^r / Γ(r)                  A₃ = (α+T)^−(r+x)
        A₂ = Γ(a+b) Γ(b+x) / (Γ(b) Γ(a+b+x))    A₄ = a/(b+x−1) · (α+t_x)^−(r+x)
    """
    customers = _Customers.of(data)
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return customers.log_likelihood(theta)[0]


def fit(
    data: Iterable[tuple[int, float, float]],
    initial: BgNbdParams | None = None,
    max_iterations: int = 1000,
) -> FitResult:
    """Maximum-likelihood (r, α, a, b) for customers ``(x, t_x, T)``.

    L-BFGS-B over the log-parameters with the analytic gradient. Identical
    summaries are counted once with their multiplicity, and the terms that
    depend on x alone once per distinct x, so a fit costs a few vector
    passes over the distinct (x, t_x, T) per iteration (rounding t_x and T
    makes more of them identical). ``initial`` defaults to r = a = b = 1 and
    α = ΣT / Σx (the mean repeat rate).
    """
    from scipy import optimize  # only the fit needs scipy: workers never load it

    customers = _Customers.of(data)
    if customers.repeats == 0:
        raise BgNbdError("cannot fit BG/NBD: no customer has a repeat purchase")
    if initial is None:
        initial = BgNbdParams(1.0, max(customers.total_age / customers.repeats, 1e-6), 1.0, 1.0)
    start = np.log([initial.r, initial.alpha, initial.a, initial.b])
    start = np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1)

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        value, gradient = customers.log_likelihood(theta)
        return -value / customers.count, -gradient / customers.count

    result = optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
        options={"maxiter": max_iterations, "ftol": 1e-15, "gtol": 1e-9},
    )
    theta = np.asarray(result.x, dtype=np.float64)
    r, alpha, a, b = (float(v) for v in np.exp(theta))
    on_bound = tuple(
        name
        for name, v in zip(("r", "alpha", "a", "b"), theta, strict=True)
        if abs(v) >= _LOG_BOUND - 1e-6
    )
    return FitResult(
        params=BgNbdParams(r, alpha, a, b),
        log_likelihood=customers.log_likelihood(theta)[0],
        iterations=int(result.nit),
        converged=bool(result.success) and not on_bound,
        on_bound=on_bound,
    )


@dataclass(frozen=True, slots=True)
class _Customers:
    """Validated summaries, laid out for the likelihood: the x-only terms
    per distinct x, then the customers without and with repeat purchases
    (each distinct row once, with its count as weight)."""

    count: float
    repeats: float
    total_age: float
    xs: FloatArray  # distinct x
    xs_weight: FloatArray  # customers per distinct x
    age0: FloatArray  # no repeat purchase: T
    weight0: FloatArray
    x1: FloatArray  # repeat purchases: x, t_x, T
    t_x1: FloatArray
    age1: FloatArray
    weight1: FloatArray

    @classmethod
    def of(cls, data: Iterable[tuple[int, float, float]]) -> _Customers:
        rows = np.asarray(list(data), dtype=np.float64)
        if rows.size == 0:
            rows = np.zeros((0, 3))
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise BgNbdError("BG/NBD data must be a sequence of (x, t_x, T) triples")
        if not np.all(np.isfinite(rows)):
            raise BgNbdError("BG/NBD data must be finite numbers")
        x, t_x, age = rows[:, 0], rows[:, 1], rows[:, 2]
        if np.any(x < 0) or np.any(x != np.floor(x)):
            raise BgNbdError("x (repeat purchases) must be whole numbers ≥ 0")
        if np.any(t_x < 0) or np.any(t_x > age):
            raise BgNbdError("each customer needs 0 ≤ t_x ≤ T")
        xs, xs_weight = np.unique(x, return_counts=True)
        none = x == 0
        age0, weight0 = np.unique(age[none], return_counts=True)
        some, some_weight = np.unique(rows[~none], axis=0, return_counts=True)
        return cls(
            count=float(len(rows)),
            repeats=float(x.sum()),
            total_age=float(age.sum()),
            xs=xs,
            xs_weight=xs_weight.astype(np.float64),
            age0=age0,
            weight0=weight0.astype(np.float64),
            x1=np.ascontiguousarray(some[:, 0]),
            t_x1=np.ascontiguousarray(some[:, 1]),
            age1=np.ascontiguousarray(some[:, 2]),
            weight1=some_weight.astype(np.float64),
        )

    def log_likelihood(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """Σ ln L and its gradient with respect to (ln r, ln α, ln a, ln b)."""
        from scipy.special import digamma, gammaln

        r, alpha, a, b = (float(v) for v in np.exp(theta))
        log_alpha = math.log(alpha)
        xs, w = self.xs, self.xs_weight
        # ln A₁ + ln A₂: x alone
        value = float(
            w
            @ (
                gammaln(r + xs)
                + gammaln(b + xs)
                - gammaln(a + b + xs)
                + (r * log_alpha - gammaln(r) + gammaln(a + b) - gammaln(b))
            )
        )
        psi_abx = digamma(a + b + xs)
        psi_ab = float(digamma(a + b))
        d_r = float(w @ (digamma(r + xs) + (log_alpha - float(digamma(r)))))
        d_alpha = r / alpha * self.count
        d_a = float(w @ (psi_ab - psi_abx))
        d_b = float(w @ (digamma(b + xs) - psi_abx + (psi_ab - float(digamma(b)))))
        # no repeat purchase: ln A₃ = −r ln(α+T)
        log_age0 = np.log(alpha + self.age0)
        value -= r * float(self.weight0 @ log_age0)
        d_r -= float(self.weight0 @ log_age0)
        d_alpha -= r * float(self.weight0 @ (1 / (alpha + self.age0)))
        # repeat purchases: ln(A₃ + A₄), and the shares of the two terms
        rx = r + self.x1
        log_age = np.log(alpha + self.age1)
        log_last = np.log(alpha + self.t_x1)
        log_a3 = -rx * log_age
        log_a4 = math.log(a) - np.log(b + self.x1 - 1) - rx * log_last
        log_sum = np.logaddexp(log_a3, log_a4)
        share3 = np.exp(log_a3 - log_sum)
        share4 = np.exp(log_a4 - log_sum)
        w1 = self.weight1
        value += float(w1 @ log_sum)
        d_r -= float(w1 @ (share3 * log_age + share4 * log_last))
        d_alpha -= float(w1 @ (rx * (share3 / (alpha + self.age1) + share4 / (alpha + self.t_x1))))
        d_a += float(w1 @ share4) / a
        d_b -= float(w1 @ (share4 / (b + self.x1 - 1)))
        return value, np.array([r * d_r, alpha * d_alpha, a * d_a, b * d_b])
