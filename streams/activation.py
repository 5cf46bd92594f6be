"""The activation rules: when a user counts as activated (the key action
within the window after sign-up) and as retained (active again a period
after activation) — the facts the journey stage is derived from — and the
nudges a user gets who signed up but is not activated
(``triggers.activation-stalled``): one at each of
``activation.stalled_after_s`` after sign-up, until activation.
"""

from __future__ import annotations

from streams import topics
from streams.delivery import Pending
from streams.policy import Policy, Precomputed
from streams.userstate import UserState, WorkingState

TYPE_ACTIVATION_STALLED = "activation_stalled"


def activation_and_retention(state: WorkingState, etype: str, ts: int, pre: Precomputed) -> None:
    """Record an event of type ``etype`` at ``ts`` as the activation or the
    retention, when it is one (``pre``: the policy's precomputed values)."""
    if state.activation_ms is None and etype in pre.activation_events:
        start = state.signup_ms if state.signup_ms is not None else state.first_seen_ms
        if 0 <= ts - start <= pre.activation_window_ms:
            state.activation_ms = ts
            return
    activated = state.activation_ms
    if activated is not None and state.retained_ms is None and ts - activated >= pre.retention_ms:
        state.retained_ms = ts


def stalled_nudge(state: UserState, policy: Policy) -> Pending | None:
    """The next activation-stalled nudge (None: not signed up, activated, or
    every nudge sent)."""
    stalled = policy.activation.stalled_after_s
    signup = state.signup_ms
    if signup is None or state.activation_ms is not None or state.stalled_sent >= len(stalled):
        return None
    step = state.stalled_sent + 1
    return Pending(
        signup + stalled[step - 1] * 1000,
        TYPE_ACTIVATION_STALLED,
        topics.TRIGGERS_ACTIVATION_STALLED,
        (signup, step),
        {
            "rule": "not_activated_after_signup",
            "step": step,
            "after_s": stalled[step - 1],
            "signup": signup,
            "activation_events": list(policy.stages.activation_events),
        },
        {"step": step, "signed_up_at": signup},
        lambda s, at: {"stalled_sent": s.stalled_sent + 1},
    )
