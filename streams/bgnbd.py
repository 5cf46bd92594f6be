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

This module is the model and its per-user answers (:func:`summary`,
:func:`p_alive`, :func:`alive_below_at`, :func:`expected_purchases`,
:func:`expected_next_purchase_days`, and their millisecond-based wrappers):
plain ``math`` but for scipy's ₂F₁, a few microseconds a call, fit for a
worker's event or timer path. The population half — the likelihood and the
fit, with numpy and scipy over every buyer's summary, run by
``userpulse fit`` — is :mod:`streams.bgnbd_fit`.

Pure: no I/O, no clock; time always comes in as an argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

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


# ---- summary ------------------------------------------------------------
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


# ---- P(alive) ------------------------------------------------------------
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


# ---- expected purchases ---------------------------------------------------
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


# ---- on a state's millisecond fields -----------------------------------
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
    """The first whole millisecond, from the last order on, at which
    :func:`p_alive_at_ms` is below ``threshold`` if no further order comes
    (None: never — not a repeat buyer, a threshold ≤ 0, or later than any
    time a float can hold).

    :func:`alive_below_at` gives the time in closed form. Rounded up to a
    millisecond it is checked against :func:`p_alive_at_ms` itself, which
    floating point can put a millisecond or so either side of it (or, for a
    threshold within rounding of 1, further): the answer is then searched out
    from it and bracketed by halving, a few evaluations.
    """
    data = summary(first_order_ms, last_order_ms, order_count, 0, unit_days)
    if data is None or first_order_ms is None:
        return None
    x, t_x, _ = data
    age = alive_below_at(params, x, t_x, threshold)
    if age is None:
        return None
    offset = age * unit_days * DAY_MS
    if not math.isfinite(offset):
        return None

    def below(at_ms: int) -> bool:
        p = p_alive_at_ms(params, first_order_ms, last_order_ms, order_count, at_ms, unit_days)
        return p is not None and p < threshold

    earliest = first_order_ms if last_order_ms is None else max(first_order_ms, last_order_ms)
    if below(earliest):
        return earliest  # P(alive) is the same at every time up to the last order
    # widen a bracket around the closed form until below(high) and not below(low)
    high = max(earliest + 1, first_order_ms + math.ceil(offset))
    low, step = high - 1, 1
    while not below(high):
        low, high, step = high, high + step, 2 * step
    step = 1
    while low > earliest and below(low):
        high, low, step = low, max(earliest, low - step), 2 * step
    while high - low > 1:
        mid = (low + high) // 2
        if below(mid):
            high = mid
        else:
            low = mid
    return high


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
