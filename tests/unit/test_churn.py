"""The churn model's rule: the deadline is the first whole millisecond after
the last activity at which P(alive) — as p_alive_at_ms computes it — is
below the threshold, found in closed form; every way it has no answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.bgnbd import BgNbdParams, p_alive_at_ms
from streams.churn import (
    MODEL_HORIZON_MS,
    TYPE_CHURN_WARNING,
    ChurnModel,
    model_due,
    model_warning,
    p_alive_at,
)
from streams.events import Event
from streams.policy import DAY_MS, ChurnPolicy, DeliveryPolicy, Policy
from streams.state import apply
from streams.timed import next_deadline, run_until
from streams.triggers import Trigger
from streams.userstate import UserState, thaw

T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z
#: the BG/NBD estimates of Fader, Hardie & Lee (2005) for CDNOW, in weeks
CDNOW = ChurnModel(BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426), unit_days=7.0)
#: only the model rule, and no delivery rule to move its deadline
POLICY = Policy(
    churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=0.3),
    delivery=DeliveryPolicy(quiet_hours=(), daily_cap=0),
)


def buyer(*order_days: float, seen_day: float | None = None) -> UserState:
    """A user with an order on each of ``order_days`` (days after T0), last
    seen on ``seen_day`` (a page view) when given."""
    state: UserState | None = None
    for n, day in enumerate(order_days):
        order = Event(f"o{n}", "order_completed", T0 + int(day * DAY_MS), user_id="u",
                      properties={"order_id": f"o{n}", "revenue": 40.0})  # fmt: skip
        state = apply(state, order, POLICY)
    if seen_day is not None:
        state = apply(state, Event("v", "page_viewed", T0 + int(seen_day * DAY_MS), user_id="u"))
    assert state is not None
    return state


def p_at(model: ChurnModel, state: UserState, at_ms: int) -> float:
    p = p_alive_at_ms(model.params, state.first_order_ms, state.last_order_ms,
                      state.order_count, at_ms, model.unit_days)  # fmt: skip
    assert p is not None
    return p


def warnings(triggers: list[Trigger]) -> list[Trigger]:
    return [t for t in triggers if t.type == TYPE_CHURN_WARNING]


def test_the_deadline_is_the_first_millisecond_p_alive_is_below_the_threshold() -> None:
    state = buyer(0, 20, 45)
    due = model_due(state, POLICY, CDNOW)
    assert due is not None and due > state.last_seen_ms
    assert p_at(CDNOW, state, due) < 0.3 <= p_at(CDNOW, state, due - 1)
    others = next_deadline(state, POLICY)  # health and RFM recency, on time
    assert others is not None
    assert next_deadline(state, POLICY, CDNOW) == min(due, others)
    assert next_deadline(thaw(state), POLICY, CDNOW) == min(due, others)  # a working state too


def test_the_warning_fires_at_its_deadline_with_p_alive_below_the_threshold() -> None:
    state = buyer(0, 20, 45)
    due = model_due(state, POLICY, CDNOW)
    assert due is not None
    assert warnings(run_until(state, due - 1, POLICY, CDNOW)[1]) == []
    warned, fired = run_until(state, due, POLICY, CDNOW)
    [warning] = warnings(fired)
    assert warning.occurred_at_ms == due and warning.reason["rule"] == "bgnbd_p_alive"
    assert warning.reason["p_alive"] == p_alive_at(CDNOW, state, due) < 0.3
    assert warned is not None and model_due(warned, POLICY, CDNOW) is None  # warned once


def test_below_the_threshold_already_at_the_last_activity_warns_a_millisecond_after() -> None:
    state = buyer(0, 1, seen_day=300)  # ordered twice early, only browsing since
    assert p_at(CDNOW, state, state.last_seen_ms) < 0.3
    assert model_due(state, POLICY, CDNOW) == state.last_seen_ms + 1


def test_no_deadline_without_a_model_a_threshold_or_a_repeat_purchase() -> None:
    state = buyer(0, 20, 45)
    assert model_warning(state, POLICY, None) is None
    off = replace(POLICY, churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=0.0))
    assert model_due(state, off, CDNOW) is None
    assert model_due(buyer(0), POLICY, CDNOW) is None  # one order: P(alive) stays 1
    assert model_due(buyer(seen_day=0), POLICY, CDNOW) is None  # no order
    assert next_deadline(buyer(0), POLICY, CDNOW) == next_deadline(buyer(0), POLICY)


def test_no_deadline_once_the_episode_was_warned_about() -> None:
    state = replace(buyer(0, 20, 45), churn_warned_ms=T0 + 100 * DAY_MS)
    assert model_due(state, POLICY, CDNOW) is None


def test_no_deadline_when_the_threshold_is_reached_only_beyond_the_horizon() -> None:
    state = buyer(0, 20, 45)
    low = replace(POLICY, churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=0.05))
    assert p_at(CDNOW, state, state.last_seen_ms + MODEL_HORIZON_MS) >= 0.05
    assert model_due(state, low, CDNOW) is None
    assert (
        warnings(run_until(state, state.last_seen_ms + 2 * MODEL_HORIZON_MS, low, CDNOW)[1]) == []
    )


def test_a_model_that_cannot_answer_sets_no_deadline() -> None:
    """unit_days 0: the model raises BgNbdError, which is no answer."""
    broken = ChurnModel(CDNOW.params, unit_days=0.0)
    state = buyer(0, 20, 45)
    assert model_due(state, POLICY, broken) is None
    assert p_alive_at(broken, state, state.last_seen_ms) is None
    assert next_deadline(state, POLICY, broken) == next_deadline(state, POLICY)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        BgNbdParams,
        r=st.floats(0.05, 10),
        alpha=st.floats(0.1, 50),
        a=st.floats(0.05, 20),
        b=st.floats(0.05, 50),
    ),
    st.lists(st.integers(0, 200 * DAY_MS), min_size=2, max_size=6),
    st.integers(0, 200 * DAY_MS),
    st.floats(0.01, 0.99),
)
def test_the_deadline_is_exact_for_any_model_and_buyer(
    params: BgNbdParams, orders: list[int], idle_ms: int, threshold: float
) -> None:
    """Within the horizon after the last activity: P(alive) below the
    threshold at the deadline and not a millisecond before (or the deadline
    is the millisecond after the last activity); no deadline exactly when
    P(alive) is still at or above it at the horizon."""
    model = ChurnModel(params, unit_days=7.0)
    policy = replace(POLICY, churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=threshold))
    state = buyer(*(ms / DAY_MS for ms in orders))
    state = replace(state, last_seen_ms=state.last_seen_ms + idle_ms)
    due = model_due(state, policy, model)
    last_seen = state.last_seen_ms
    if p_at(model, state, last_seen + MODEL_HORIZON_MS) >= threshold:
        assert due is None
        return
    assert due is not None and last_seen < due <= last_seen + MODEL_HORIZON_MS
    assert p_at(model, state, due) < threshold
    assert due == last_seen + 1 or p_at(model, state, due - 1) >= threshold


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.1])
def test_a_lower_threshold_warns_later(threshold: float) -> None:
    state = buyer(0, 20, 45)
    policy = replace(POLICY, churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=threshold))
    higher = replace(POLICY, churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=threshold + 0.1))
    due, earlier = model_due(state, policy, CDNOW), model_due(state, higher, CDNOW)
    assert due is not None and earlier is not None and earlier < due
