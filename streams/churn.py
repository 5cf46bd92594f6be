"""The churn rules (``triggers.churn-warning``): one warning per episode of
absence, and a win-back when the warned user returns.

Two rules warn, whichever comes first:

- fixed inactivity: ``churn.inactivity_s`` after the last activity;
- the churn model: when the BG/NBD P(alive) of a repeat buyer falls below
  ``churn.p_alive_threshold`` (docs/churn-model.md), once the adapter has a
  fitted :class:`ChurnModel` to compute it with. P(alive) only falls while
  the user stays away, so the moment is known in advance, in closed form.

Any activity ends the episode. Warnings are prioritised by value tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from streams import lifecycle, topics
from streams.bgnbd import BgNbdError, BgNbdParams, alive_below_at_ms, p_alive_at_ms
from streams.delivery import DEFAULT_DELIVERY, Pending, delivery_block, suppressed
from streams.events import Event
from streams.policy import DAY_MS, DeliveryPolicy, Policy
from streams.profile import profile_snapshot
from streams.triggers import Trigger, state_trigger_id
from streams.userstate import AnyState, UserState

TYPE_CHURN_WARNING = "churn_warning"
TYPE_WIN_BACK = "win_back"

#: The churn model warns within this long after the last activity; a P(alive)
#: that would fall below the threshold only later never warns.
MODEL_HORIZON_MS: Final = 365 * DAY_MS


@dataclass(frozen=True, slots=True)
class ChurnModel:
    """Fitted BG/NBD parameters and the unit of time (``unit_days``) they
    were fitted in: what the churn model's rule needs, handed in by the
    adapter once ``userpulse fit`` has published a model (None before)."""

    params: BgNbdParams
    unit_days: float


def p_alive_at(model: ChurnModel, state: AnyState, at_ms: int) -> float | None:
    """The user's P(alive) at ``at_ms`` (None: no orders, or the model cannot
    answer — a :class:`~streams.bgnbd.BgNbdError`)."""
    try:
        return p_alive_at_ms(
            model.params,
            state.first_order_ms,
            state.last_order_ms,
            state.order_count,
            at_ms,
            model.unit_days,
        )
    except BgNbdError:
        return None


def inactivity_warning(state: UserState, policy: Policy) -> Pending | None:
    """The fixed-inactivity warning still to come (None: the rule is off or
    the episode was warned about)."""
    inactivity = policy.churn.inactivity_s
    if inactivity <= 0 or state.churn_warned_ms is not None:
        return None
    return _warning(state, state.last_seen_ms + inactivity * 1000, "fixed_inactivity", {
        "inactive_s": inactivity,
    })  # fmt: skip


def model_warning(state: UserState, policy: Policy, model: ChurnModel | None) -> Pending | None:
    """The churn model's warning still to come, with P(alive) at its time
    (None: no model, or see :func:`model_due`)."""
    if model is None:
        return None
    due = model_due(state, policy, model)
    if due is None:
        return None
    return _warning(state, due, "bgnbd_p_alive", {
        "p_alive": p_alive_at(model, state, due), "threshold": policy.churn.p_alive_threshold,
    })  # fmt: skip


def model_due(state: AnyState, policy: Policy, model: ChurnModel) -> int | None:
    """The first whole millisecond after the user's last activity at which
    P(alive) is below ``churn.p_alive_threshold``
    (:func:`~streams.bgnbd.alive_below_at_ms`; already below: the millisecond
    after the last activity). None: the rule is off, the episode was warned
    about, one order or none (P(alive) stays 1), not within
    :data:`MODEL_HORIZON_MS` of the last activity, or the model cannot answer."""
    threshold = policy.churn.p_alive_threshold
    if threshold <= 0 or state.churn_warned_ms is not None:
        return None
    if state.order_count < 2:
        return None  # one purchase: P(alive) is 1 in BG/NBD
    try:
        at = alive_below_at_ms(
            model.params,
            state.first_order_ms,
            state.last_order_ms,
            state.order_count,
            threshold,
            model.unit_days,
        )
    except BgNbdError:
        return None
    last_seen = state.last_seen_ms
    if at is None or at > last_seen + MODEL_HORIZON_MS:
        return None
    return at if at > last_seen else last_seen + 1


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
            trigger_id=state_trigger_id(TYPE_WIN_BACK, new, event.event_id),
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
