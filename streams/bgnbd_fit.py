"""The BG/NBD churn model's population half: the log-likelihood of every
buyer's summary ``(x, t_x, T)`` and the maximum-likelihood fit of the
parameters (r, α, a, b), with numpy and scipy — run by ``userpulse fit``,
never on a worker's event path. The model and its per-user answers are in
:mod:`streams.bgnbd`; docs/churn-model.md explains both.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from scipy.special import digamma, gammaln

from streams.bgnbd import BgNbdError, BgNbdParams

#: Log-parameters are kept within ±this during the fit (e^20 ≈ 5e8).
_LOG_BOUND: Final = 20.0


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
    # with ftol this tight, L-BFGS-B can stop in its line search once the
    # objective is flat to machine precision: that is an optimum if the
    # gradient there is flat too
    at_optimum = bool(result.success) or _flat(objective(theta)[1])
    on_bound = tuple(
        name
        for name, v in zip(("r", "alpha", "a", "b"), theta, strict=True)
        if abs(v) >= _LOG_BOUND - 1e-6
    )
    return FitResult(
        params=BgNbdParams(r, alpha, a, b),
        log_likelihood=customers.log_likelihood(theta)[0],
        iterations=int(result.nit),
        converged=at_optimum and not on_bound,
        on_bound=on_bound,
    )


_FLAT_GRADIENT: Final = 1e-6


def _flat(gradient: FloatArray) -> bool:
    """Whether the per-customer gradient over the log-parameters is zero to
    within what the likelihood's rounding allows."""
    return bool(np.max(np.abs(gradient)) < _FLAT_GRADIENT)


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
