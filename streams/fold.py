"""Folding a batch of one user's events: the worker's unit of work.

A worker takes events in batches; the events of one user in a batch are folded
here in their order, exactly as one at a time — passed deadlines caught up
first, then :func:`~streams.state.apply`, the decisions on the event, win-back,
and the derived messages for other partitions — but the state is stored once
per user per batch instead of once per event: one table write, one changelog
record, one Redis operation.

Nothing here reads a clock or does I/O; :func:`fold_events` over a list gives
what folding its events one by one gives (``tests/unit/test_fold.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.derived import DerivedMessage
from streams.events import Event
from streams.identity import aliases_to_send, forward_to
from streams.policy import Policy
from streams.referral import credits_to_send
from streams.state import UserState, apply, erased_marker
from streams.timed import PAliveAt, run_until, win_back
from streams.triggers import Trigger, decide_on_event


@dataclass(slots=True)
class Folded:
    """What a user's events did: the state to store, in order the triggers and
    the derived messages to send."""

    #: the user's state after the events (an erasure leaves its marker)
    state: UserState | None
    #: how many events changed the state (0: all redelivered, nothing to
    #: store); the state's revision advances by as much
    changes: int = 0
    #: whether an erasure happened among the events
    erased: bool = False
    triggers: list[Trigger] = field(default_factory=list)
    derived: list[DerivedMessage] = field(default_factory=list)


def fold_events(
    state: UserState | None,
    events: Iterable[Event],
    policy: Policy,
    p_alive_at: PAliveAt | None = None,
) -> Folded:
    """Fold one user's ``events`` (in stream order) into ``state``."""
    out = Folded(state)
    for event in events:
        current = out.state
        forward = forward_to(current, event)
        if forward is not None:  # an anonymous id already merged into a user
            out.derived.append(forward)
            continue
        # deadlines that passed before this event are decided first, at their
        # own time — as a live timer would have
        caught, timed = run_until(current, event.timestamp_ms - 1, policy, p_alive_at)
        new = apply(caught, event, policy)
        if new is caught and not timed:
            continue  # a redelivered event: nothing changes
        out.triggers.extend(timed)
        out.triggers.extend(decide_on_event(caught, new, event))
        out.triggers.extend(win_back(caught, new, event, policy.delivery))
        out.derived.extend(aliases_to_send(caught, event))
        out.derived.extend(credits_to_send(caught, new, event))
        if new is None:  # erased: what remains is the marker
            user_id = current.user_id if current is not None else event.key
            new = erased_marker(user_id, event.timestamp_ms)
            out.erased = True
        out.state = new
        out.changes += 1
    return out
