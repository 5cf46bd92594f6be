"""Deciding on time: the triggers that fire on the ABSENCE of an event.

Like Kafka Streams' punctuator or Flink's ``onTimer``, and apart from the
decisions on events: :func:`next_deadline` says when a user's state next needs
a look, :func:`decide_on_time` decides at a given time, :func:`run_until`
replays every deadline up to a time. The caller chooses the clock (wall or
stream time); nothing here reads one. Deciding at the deadline itself — not
at whatever moment the timer woke — makes a live run and a replay give the
same triggers with the same ids.

The rules are in their families' modules, thresholds in the policy:

- cart abandonment reminders (:mod:`streams.cart`);
- activation-stalled nudges (:mod:`streams.activation`);
- churn warnings, by inactivity or the churn model (:mod:`streams.churn`);
- health and RFM segment, re-derived on time (at_risk, dormant, recency
  decay: :mod:`streams.lifecycle`) and emitted as lifecycle changes.

Every marketing trigger (all but lifecycle) goes out through the delivery
rules (:mod:`streams.delivery`): quiet hours and the daily cap defer it,
consent flags or suppresses it.
"""

from __future__ import annotations

from streams.activation import stalled_nudge
from streams.cart import reminder
from streams.churn import (
    TYPE_CHURN_WARNING,
    ChurnModel,
    inactivity_warning,
    model_due,
    model_warning,
)
from streams.delivery import Pending, QuietTable, deliver, deliverable_at, emit, quiet_table
from streams.events import Event
from streams.policy import Policy, Precomputed, precomputed
from streams.state import derive
from streams.triggers import Trigger, decide_on_event
from streams.userstate import STAGE_ERASED, STAGE_MERGED, AnyState, UserState


# ---- when ---------------------------------------------------------------------
def next_deadline(
    state: AnyState | None, policy: Policy, churn_model: ChurnModel | None = None
) -> int | None:
    """The earliest time at which :func:`decide_on_time` would change or emit
    something for ``state`` (None: nothing is pending)."""
    return deadline_of(state, precomputed(policy), churn_model)


def deadline_of(
    state: AnyState | None, pre: Precomputed, churn_model: ChurnModel | None = None
) -> int | None:
    """:func:`next_deadline` with the policy's :class:`Precomputed` values."""
    if state is None or state.event_count == 0:
        return None
    stage = state.stage
    if stage in (STAGE_MERGED, STAGE_ERASED) or state.merged_into is not None:
        return None  # merged into a known user: the user's own state has the timers
    # the times at which health or the RFM recency score change by
    # themselves, then the due times of pending() and model_due() moved past
    # quiet hours and the daily cap — inline, without building the triggers:
    # it runs once per event (tests/unit/test_fold.py holds it to the rules'
    # own times). Deferring only moves a time later, so a due time not before
    # the best so far is not deferred at all.
    evaluated = state.evaluated_ms  # derivations only count once ahead of it
    last_seen = state.last_seen_ms
    best: int | None = None
    at = state.first_seen_ms + pre.new_ms
    if at > evaluated:
        best = at
    at = last_seen + pre.active_ms
    if at > evaluated and (best is None or at < best):
        best = at
    at = last_seen + pre.dormant_ms
    if at > evaluated and (best is None or at < best):
        best = at
    resurrected = state.resurrected_ms
    if resurrected is not None:
        at = resurrected + pre.resurrected_ms
        if at > evaluated and (best is None or at < best):
            best = at
    last_order = state.last_order_ms
    if last_order is not None:
        for recency in pre.recency_ms:
            at = last_order + recency + 1
            if at > evaluated and (best is None or at < best):
                best = at
    policy = pre.policy
    dues: list[int] = []  # the marketing rules' next due times, before deferral
    cart = state.cart
    if (
        cart is not None
        and cart.reminders_sent < pre.cart_steps
        and cart.value >= policy.cart.min_value
    ):
        dues.append(cart.last_change_ms + pre.cart_delays_ms[cart.reminders_sent])
    signup = state.signup_ms
    if (
        signup is not None
        and state.activation_ms is None
        and state.stalled_sent < pre.stalled_steps
    ):
        dues.append(signup + pre.stalled_ms[state.stalled_sent])
    if pre.inactivity_ms > 0 and state.churn_warned_ms is None:
        dues.append(last_seen + pre.inactivity_ms)
    if churn_model is not None:
        due_at = model_due(state, policy, churn_model)
        if due_at is not None:
            dues.append(due_at)
    looked = False  # the quiet-hours table is looked up once, and only if needed
    quiet: QuietTable | None = None
    for due in dues:
        if best is None or due < best:
            if not looked:
                quiet, looked = _quiet(state, pre), True
            at = deliver(due, state, quiet, policy.delivery.daily_cap)
            if best is None or at < best:
                best = at
    return best


def _quiet(state: AnyState, pre: Precomputed) -> QuietTable | None:
    return quiet_table(state, pre.policy.delivery) if pre.quiet is not None else None


# ---- what ---------------------------------------------------------------------
def pending(state: UserState, policy: Policy) -> list[Pending]:
    """The next step of every marketing rule that is still to come, but the
    churn model's (which needs the model: :func:`~streams.churn.model_warning`)."""
    return [
        due
        for due in (
            reminder(state, policy),
            stalled_nudge(state, policy),
            inactivity_warning(state, policy),
        )
        if due is not None
    ]


# ---- deciding -----------------------------------------------------------------
def decide_on_time(
    state: UserState, now_ms: int, policy: Policy, churn_model: ChurnModel | None = None
) -> tuple[UserState, list[Trigger]]:
    """The state and triggers at ``now_ms``: re-derived health and segment
    (lifecycle changes), then every marketing rule that is due and deliverable."""
    if state.stage in (STAGE_MERGED, STAGE_ERASED) or state.merged_into is not None:
        return state, []
    tick = Event(
        event_id=f"time:{now_ms}",
        type="time_passed",
        timestamp_ms=now_ms,
        user_id=state.user_id,
    )
    derived = derive(state, now_ms, policy)
    triggers = [t for t in decide_on_event(state, derived, tick) if t.type != "stage_changed"]
    current = derived
    dues = pending(current, policy)
    churn = model_warning(current, policy, churn_model)
    if churn is not None:
        dues.append(churn)
    for due in sorted(dues, key=lambda d: d.due_ms):
        if due.due_ms > now_ms or deliverable_at(due.due_ms, current, policy.delivery) > now_ms:
            continue  # not yet, or deferred by quiet hours / the daily cap
        if due.trigger_type == TYPE_CHURN_WARNING and current.churn_warned_ms is not None:
            continue  # one warning per episode, whichever rule came first
        trigger, current = emit(due, current, now_ms, policy.delivery)
        if trigger is not None:
            triggers.append(trigger)
    return current, triggers


def run_until(
    state: UserState | None, until_ms: int, policy: Policy, churn_model: ChurnModel | None = None
) -> tuple[UserState | None, list[Trigger]]:
    """Decide at every deadline up to ``until_ms``, in order (deterministic:
    each decision happens at its own deadline, whenever it is run)."""
    triggers: list[Trigger] = []
    for _ in range(1000):  # a guard; each round moves a deadline or ends
        deadline = next_deadline(state, policy, churn_model)
        if state is None or deadline is None or deadline > until_ms:
            return state, triggers
        state, fired = decide_on_time(state, deadline, policy, churn_model)
        triggers += fired
    return state, triggers
