"""The churn rules (``triggers.churn-warning``): one warning per episode of
absence, and a win-back when the warned user returns.

Two rules warn, whichever comes first:

- fixed inactivity: ``churn.inactivity_s`` after the last activity;
- the churn model: when the BG/NBD P(alive) of a repeat buyer falls below
  ``churn.p_alive_threshold`` (docs/churn-model.md), once the adapter has
  fitted parameters to compute it with.

Any activity ends the episode. Warnings are prioritised by value tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams import lifecycle, topics
from streams.delivery import DEFAULT_DELIVERY, Pending, delivery_block, suppressed
from streams.events import Event
from streams.policy import DAY_MS, DeliveryPolicy, Policy
from streams.profile import profile_snapshot
from streams.triggers import Trigger, trigger_id_for
from streams.userstate import AnyState, UserState, WorkingState, freeze

TYPE_CHURN_WARNING = "churn_warning"
TYPE_WIN_BACK = "win_back"

#: P(alive) of a user at a time: supplied by the adapter once BG/NBD
#: parameters are fitted (None: the model rule is off)
PAliveAt = Callable[[UserState, int], float | None]


def inactivity_warning(state: UserState, policy: Policy) -> Pending | None:
    """The fixed-inactivity warning still to come (None: the rule is off or
    the episode was warned about)."""
    inactivity = policy.churn.inactivity_s
    if inactivity <= 0 or state.churn_warned_ms is not None:
        return None
    return _warning(state, state.last_seen_ms + inactivity * 1000, "fixed_inactivity", {
        "inactive_s": inactivity,
    })  # fmt: skip


def model_warning(state: UserState, policy: Policy, p_alive_at: PAliveAt | None) -> Pending | None:
    """The churn model's warning still to come (None: no model, the rule is
    off, the episode was warned about, or P(alive) stays above the threshold)."""
    due = model_due(state, policy, p_alive_at)
    if due is None:
        return None
    p = p_alive_at(state, due) if p_alive_at else None
    return _warning(state, due, "bgnbd_p_alive", {
        "p_alive": p, "threshold": policy.churn.p_alive_threshold,
    })  # fmt: skip


def model_due(state: AnyState, policy: Policy, p_alive_at: PAliveAt | None) -> int | None:
    """When P(alive) first falls below the threshold (searched by bisection
    over the next year; P(alive) only falls while the user is away)."""
    threshold = policy.churn.p_alive_threshold
    if p_alive_at is None or threshold <= 0 or state.churn_warned_ms is not None:
        return None
    if state.order_count < 2:
        return None  # one purchase: P(alive) is 1 in BG/NBD
    if isinstance(state, WorkingState):
        state = freeze(state)  # the model reads a stored state
    low, high = state.last_seen_ms, state.last_seen_ms + 365 * DAY_MS
    p_high = p_alive_at(state, high)
    if p_high is None or p_high >= threshold:
        return None
    while high - low > 60_000:
        mid = (low + high) // 2
        p = p_alive_at(state, mid)
        if p is not None and p < threshold:
            high = mid
        else:
            low = mid
    return high


def _warning(state: UserState, due: int, rule: str, numbers: dict[str, Any]) -> Pending:
    return Pending(
        due,
        TYPE_CHURN_WARNING,
        topics.TRIGGERS_CHURN_WARNING,
        (state.last_seen_ms,),
        {"rule": rule, "last_seen": state.last_seen_ms, **numbers},
        {"last_seen": state.last_seen_ms, "priority": _priority(state)},
        lambda s, at: {"churn_warned_ms": at},
    )


def _priority(state: AnyState) -> int:
    """Churn warnings are prioritised by value tier: 1 high, 2 mid, 3 low."""
    return {lifecycle.HIGH: 1, lifecycle.MID: 2}.get(state.tier, 3)


# ---- the user returns ------------------------------------------------------------
def win_back(
    old: UserState | None,
    new: UserState | None,
    event: Event,
    delivery: DeliveryPolicy = DEFAULT_DELIVERY,
) -> list[Trigger]:
    """A user warned about churn came back: a win-back trigger with how long
    they were gone. It goes out at once — the user is active right now — so
    quiet hours and the daily cap do not hold it back; consent does (flagged
    or suppressed like every marketing trigger)."""
    if old is None or new is None or old.churn_warned_ms is None:
        return []
    return returned(old.churn_warned_ms, old.last_seen_ms, new, event, delivery)


def returned(
    warned_ms: int, last_seen_ms: int, new: AnyState, event: Event, delivery: DeliveryPolicy
) -> list[Trigger]:
    """:func:`win_back` from the warning time and last activity before ``event``."""
    if event.timestamp_ms < warned_ms:
        return []
    consent = new.consented(delivery.channel)
    if suppressed(consent, delivery):
        return []
    gone_ms = event.timestamp_ms - last_seen_ms
    return [
        Trigger(
            trigger_id=trigger_id_for(TYPE_WIN_BACK, new.user_id, event.event_id),
            type=TYPE_WIN_BACK,
            topic=topics.TRIGGERS_CHURN_WARNING,
            user_id=new.user_id,
            occurred_at_ms=event.timestamp_ms,
            reason={
                "rule": "returned_after_churn_warning",
                "warned_at": warned_ms,
                "gone_s": gone_ms // 1000,
                "event_type": event.type,
            },
            profile=profile_snapshot(new),
            payload={
                "gone_days": round(gone_ms / DAY_MS, 2),
                "priority": _priority(new),
                "delivery": delivery_block(delivery, consent, 0),
            },
        )
    ]
