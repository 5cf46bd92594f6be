"""The profile fields the churn model adds (:func:`model_fields`); its
churn warnings are the core's (:class:`streams.churn.ChurnModel`).

`userpulse fit` (:mod:`agents.commands.fit`) publishes a
:class:`~agents.kafka.model_topic.Model` to the model topic; every worker
follows it (:func:`agents.kafka.model_topic.follow_model`) and uses the newest.
"""

from __future__ import annotations

import contextlib

from agents.kafka.model_topic import Model
from streams.bgnbd import (
    BgNbdError,
    expected_next_purchase_days,
    expected_purchases,
    p_alive,
    summary,
)
from streams.policy import DAY_MS
from streams.userstate import UserState


def model_fields(model: Model | None, state: UserState) -> dict[str, str]:
    """The profile fields the churn model adds: P(alive), expected orders in
    30 days and the expected next order (empty without a model or orders).
    Each number stands on its own: one that does not converge is left out."""
    if model is None:
        return {}
    data = summary(
        state.first_order_ms, state.last_order_ms, state.order_count,
        state.evaluated_ms or state.last_seen_ms, model.unit_days,
    )  # fmt: skip
    if data is None:
        return {}
    x, t_x, age = data
    params, unit = model.params, model.unit_days
    fields: dict[str, str] = {"model_as_of": str(model.as_of_ms or model.fitted_at_ms)}
    with contextlib.suppress(BgNbdError):
        fields["p_alive"] = f"{p_alive(params, x, t_x, age):.4f}"
    with contextlib.suppress(BgNbdError):
        expected = expected_purchases(params, 30 / unit, x, t_x, age)
        fields["expected_orders_30d"] = f"{expected:.4f}"
    with contextlib.suppress(BgNbdError):
        days = expected_next_purchase_days(params, x, t_x, age, unit)
        if days is not None:
            at = (state.evaluated_ms or state.last_seen_ms) + int(days * DAY_MS)
            fields["expected_next_order"] = str(at)
    return fields
