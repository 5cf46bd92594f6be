"""The operations policy: every threshold the lifecycle rules use, as plain data.

Growth teams change these in one TOML file (``USERPULSE_POLICY_FILE``;
``deploy/policy.toml`` documents every key with its default, docs/policy.md
explains them). The file is read by :func:`streams.policy_file.parse_policy`
and written by :func:`streams.policy_keys.policy_to_toml`; this module holds
the policy itself — one frozen dataclass per rule family — and
:class:`Precomputed`, the thresholds in the units the per-event rules compare
them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class StagePolicy:
    """The AARRR journey: acquired → activated → retained → monetized →
    repeat_buyer → referrer. A user's stage is the furthest one reached."""

    #: event types that count as the key action for activation
    activation_events: tuple[str, ...] = ("product_added", "order_completed")
    #: the key action must happen within this many days of sign-up (or first seen)
    activation_window_days: int = 7
    #: retained = active again at least this many days after activation
    retention_period_days: int = 7
    #: orders that make a repeat buyer
    repeat_buyer_orders: int = 2


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Amplitude-style health: new, active, at_risk, dormant, resurrected."""

    #: new while first seen less than this many days ago
    new_days: int = 7
    #: active while last seen less than this many days ago
    active_days: int = 14
    #: at_risk until this many days without activity; dormant after
    dormant_days: int = 30
    #: a dormant user who returns is resurrected for this many days
    resurrected_days: int = 14


@dataclass(frozen=True, slots=True)
class RfmPolicy:
    """RFM scores 1–5 from ascending thresholds, and the eight classic segments.

    Recency scores 5 for the most recent; frequency and monetary score 5 for
    the highest. A score at or above ``high_score`` counts as "high" for the
    segment (important/general × value/development/retention/win-back).
    """

    #: days since the last order: ≤ 1st → R5, ≤ 2nd → R4, … ; beyond the last → R1
    recency_days: tuple[int, ...] = (7, 30, 90, 180)
    #: order counts: ≥ 4th → F5, ≥ 3rd → F4, … ; below the 1st → F1
    frequency_orders: tuple[int, ...] = (2, 3, 5, 10)
    #: net revenue (revenue − refunds): ≥ 4th → M5, … ; below the 1st → M1
    monetary: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0)
    #: a score at or above this is "high" when choosing the segment
    high_score: int = 3


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """Value tier by lifetime value (net revenue): high, mid, low."""

    #: lifetime value at or above this is the high tier
    high_ltv: float = 1000.0
    #: lifetime value at or above this (and below high_ltv) is the mid tier; below is low
    mid_ltv: float = 200.0


@dataclass(frozen=True, slots=True)
class CartPolicy:
    """Cart-abandonment reminders (triggers.cart-abandonment)."""

    #: reminders at these seconds after the last cart change, one per step; [] disables
    reminder_delays_s: tuple[int, ...] = (3600, 86400, 259200)
    #: carts worth less than this get no reminder
    min_value: float = 0.0


@dataclass(frozen=True, slots=True)
class ActivationPolicy:
    """Activation-stalled nudges (triggers.activation-stalled)."""

    #: signed up but not activated: a trigger at each of these seconds after sign-up; [] disables
    stalled_after_s: tuple[int, ...] = (86400, 259200)


@dataclass(frozen=True, slots=True)
class ChurnPolicy:
    """Churn warnings and win-back (triggers.churn-warning)."""

    #: warn once after this many seconds without activity (fixed rule); 0 disables
    inactivity_s: int = 30 * 86400
    #: warn once when the BG/NBD probability of being alive falls below this; 0 disables
    p_alive_threshold: float = 0.3


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """When a marketing trigger (cart, activation-stalled, churn, win-back) may go out."""

    #: the channel marketing triggers are meant for (caps and consent are checked for it)
    channel: str = "email"
    #: at most this many marketing triggers per user per UTC day; 0 = no cap (later ones wait)
    daily_cap: int = 3
    #: quiet hours in the user's local time, [start hour, end hour); [] disables
    quiet_hours: tuple[int, ...] = (22, 8)
    #: time zone of users whose events carry no context.timezone
    default_timezone: str = "UTC"
    #: without consent for the channel: "flag" (sent, marked not deliverable) or "suppress"
    consent: str = "flag"


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole operations policy: one section per rule family."""

    stages: StagePolicy = field(default_factory=StagePolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    rfm: RfmPolicy = field(default_factory=RfmPolicy)
    tiers: TierPolicy = field(default_factory=TierPolicy)
    cart: CartPolicy = field(default_factory=CartPolicy)
    activation: ActivationPolicy = field(default_factory=ActivationPolicy)
    churn: ChurnPolicy = field(default_factory=ChurnPolicy)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)


DEFAULT_POLICY = Policy()


# ---- values the hot paths compute from a policy, once per policy ---------------
@dataclass(frozen=True, slots=True)
class Precomputed:
    """A policy's thresholds in the units the per-event rules compare them
    in (milliseconds, sets), computed once per policy by :func:`precomputed`:
    the same arithmetic the rules did per call, done once."""

    policy: Policy
    #: health.*_days × DAY_MS
    new_ms: int
    active_ms: int
    dormant_ms: int
    resurrected_ms: int
    #: rfm.recency_days × DAY_MS (the recency score changes 1 ms after each)
    recency_ms: tuple[int, ...]
    #: stages.activation_events as a set; the windows × DAY_MS
    activation_events: frozenset[str]
    activation_window_ms: int
    retention_ms: int
    #: cart.reminder_delays_s × 1000, and their count
    cart_delays_ms: tuple[int, ...]
    cart_steps: int
    #: activation.stalled_after_s × 1000, and their count
    stalled_ms: tuple[int, ...]
    stalled_steps: int
    #: churn.inactivity_s × 1000 (0: the fixed rule is off)
    inactivity_ms: int
    #: delivery.quiet_hours as (start, end), or None when there are none
    quiet: tuple[int, int] | None


_PRECOMPUTED: dict[int, Precomputed] = {}


def precomputed(policy: Policy) -> Precomputed:
    """``policy``'s :class:`Precomputed` values (cached per policy object)."""
    hit = _PRECOMPUTED.get(id(policy))
    if hit is not None and hit.policy is policy:
        return hit
    if len(_PRECOMPUTED) >= 256:  # policies built in a loop (tests): keep it small
        _PRECOMPUTED.clear()
    health, cart, stalled = policy.health, policy.cart, policy.activation.stalled_after_s
    quiet = policy.delivery.quiet_hours
    made = Precomputed(
        policy=policy,
        new_ms=health.new_days * DAY_MS,
        active_ms=health.active_days * DAY_MS,
        dormant_ms=health.dormant_days * DAY_MS,
        resurrected_ms=health.resurrected_days * DAY_MS,
        recency_ms=tuple(d * DAY_MS for d in policy.rfm.recency_days),
        activation_events=frozenset(policy.stages.activation_events),
        activation_window_ms=policy.stages.activation_window_days * DAY_MS,
        retention_ms=policy.stages.retention_period_days * DAY_MS,
        cart_delays_ms=tuple(d * 1000 for d in cart.reminder_delays_s),
        cart_steps=len(cart.reminder_delays_s),
        stalled_ms=tuple(s * 1000 for s in stalled),
        stalled_steps=len(stalled),
        inactivity_ms=policy.churn.inactivity_s * 1000,
        quiet=(quiet[0], quiet[1]) if len(quiet) == 2 and quiet[0] != quiet[1] else None,
    )
    _PRECOMPUTED[id(policy)] = made
    return made
