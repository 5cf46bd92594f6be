"""Lifecycle rules: journey stage (AARRR), health, RFM scores and segment,
value tier. Pure functions of a state, the time and the policy;
:func:`derive_fields` applies them all at once, as every change of a state
does.

Every rule is documented in docs/state.md; thresholds live in the policy.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from streams.policy import DAY_MS, HealthPolicy, Policy, Precomputed, RfmPolicy, TierPolicy

if TYPE_CHECKING:
    from streams.userstate import AnyState

# ---- journey stage ----------------------------------------------------------
ACQUIRED = "acquired"
ACTIVATED = "activated"
RETAINED = "retained"
MONETIZED = "monetized"
REPEAT_BUYER = "repeat_buyer"
REFERRER = "referrer"
#: the journey in order; a user's stage is the furthest one reached
STAGES = (ACQUIRED, ACTIVATED, RETAINED, MONETIZED, REPEAT_BUYER, REFERRER)
_RANK = {name: rank for rank, name in enumerate(STAGES)}

# ---- health -----------------------------------------------------------------
NEW = "new"
ACTIVE = "active"
AT_RISK = "at_risk"
DORMANT = "dormant"
RESURRECTED = "resurrected"
HEALTHS = (NEW, ACTIVE, AT_RISK, DORMANT, RESURRECTED)

# ---- RFM segments: (R high, F high, M high) → (id, label) ----------------------
SEGMENTS: dict[tuple[bool, bool, bool], tuple[str, str]] = {
    (True, True, True): ("important_value", "重要价值客户"),
    (True, False, True): ("important_development", "重要发展客户"),
    (False, True, True): ("important_retention", "重要保持客户"),
    (False, False, True): ("important_win_back", "重要挽留客户"),
    (True, True, False): ("general_value", "一般价值客户"),
    (True, False, False): ("general_development", "一般发展客户"),
    (False, True, False): ("general_retention", "一般保持客户"),
    (False, False, False): ("general_win_back", "一般挽留客户"),
}
SEGMENT_LABELS = dict(SEGMENTS.values())

# ---- value tier -------------------------------------------------------------
HIGH = "high"
MID = "mid"
LOW = "low"
TIERS = (HIGH, MID, LOW)


def stage_of(state: AnyState, policy: Policy) -> str:
    """The furthest journey stage ``state`` has reached (never goes back)."""
    orders = state.order_count
    if state.referral_count >= 1:
        reached = REFERRER
    elif orders >= policy.stages.repeat_buyer_orders:
        reached = REPEAT_BUYER
    elif orders >= 1:
        reached = MONETIZED
    elif state.retained_ms is not None:
        reached = RETAINED
    elif state.activation_ms is not None:
        reached = ACTIVATED
    else:
        reached = ACQUIRED
    stage = state.stage
    if stage == reached:
        return stage
    return later_stage(stage, reached)


def later_stage(a: str, b: str) -> str:
    return a if _RANK.get(a, -1) >= _RANK.get(b, -1) else b


def health_at(state: AnyState, now_ms: int, policy: HealthPolicy) -> str:
    """Amplitude-style health at ``now_ms``.

    resurrected: came back after at least ``dormant_days`` away, for
    ``resurrected_days``; else new: first seen under ``new_days`` ago; active:
    last seen under ``active_days`` ago; at_risk: under ``dormant_days``;
    dormant beyond.
    """
    return health_in_ms(
        state,
        now_ms,
        policy.resurrected_days * DAY_MS,
        policy.new_days * DAY_MS,
        policy.active_days * DAY_MS,
        policy.dormant_days * DAY_MS,
    )


def health_in_ms(
    state: AnyState, now_ms: int, resurrected_ms: int, new_ms: int, active_ms: int, dormant_ms: int
) -> str:
    """:func:`health_at` with the policy's days in milliseconds (precomputed)."""
    resurrected = state.resurrected_ms
    if resurrected is not None and now_ms - resurrected < resurrected_ms:
        return RESURRECTED
    if now_ms - state.first_seen_ms < new_ms:
        return NEW
    idle = now_ms - state.last_seen_ms
    if idle < active_ms:
        return ACTIVE
    if idle < dormant_ms:
        return AT_RISK
    return DORMANT


def rfm_at(state: AnyState, now_ms: int, policy: RfmPolicy) -> tuple[int, int, int] | None:
    """(R, F, M) scores 1–5 for a buyer at ``now_ms``; None for a non-buyer."""
    if state.order_count == 0 or state.last_order_ms is None:
        return None
    days = max(0, now_ms - state.last_order_ms) / DAY_MS
    recency = 5 - bisect_left(policy.recency_days, days)
    frequency = 1 + bisect_right(policy.frequency_orders, state.order_count)
    monetary = 1 + bisect_right(policy.monetary, state.ltv)
    return (max(1, recency), frequency, monetary)


def segment_of(rfm: tuple[int, int, int] | None, policy: RfmPolicy) -> str | None:
    """The classic RFM segment id (see :data:`SEGMENTS`), or None for a non-buyer."""
    if rfm is None:
        return None
    r, f, m = rfm
    high = policy.high_score
    return SEGMENTS[(r >= high, f >= high, m >= high)][0]


def tier_of(ltv: float, policy: TierPolicy) -> str:
    if ltv >= policy.high_ltv:
        return HIGH
    if ltv >= policy.mid_ltv:
        return MID
    return LOW


def derive_fields(
    state: AnyState, now_ms: int, pre: Precomputed
) -> tuple[int, str, str, tuple[int, int, int] | None, str | None, str]:
    """(evaluated_ms, stage, health, rfm, segment, tier) of ``state`` at
    ``now_ms`` — every rule above at once, with the policy's
    :class:`~streams.policy.Precomputed` values (it runs once per event)."""
    policy = pre.policy
    rfm = rfm_at(state, now_ms, policy.rfm) if state.order_count else None
    evaluated = state.evaluated_ms
    return (
        evaluated if evaluated >= now_ms else now_ms,
        stage_of(state, policy),
        health_in_ms(state, now_ms, pre.resurrected_ms, pre.new_ms, pre.active_ms, pre.dormant_ms),
        rfm,
        segment_of(rfm, policy.rfm) if rfm is not None else None,
        tier_of(state.ltv, policy.tiers),
    )
