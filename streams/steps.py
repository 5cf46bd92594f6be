"""One input of one user: an event, an internal message or the deadlines
due, decided for the user's state (:class:`Steps`, which
:class:`~streams.engine.Engine` extends with the batch around them).

**Speed.** In the common case — a live user with no deadline before the
event, an event that is no erasure and sends no internal message — a user's
events are folded into one mutable working state per batch
(:class:`~streams.userstate.WorkingState`, :func:`~streams.state.fold_into`),
frozen once for the write; every other case, and every internal message and
deadline, is decided on frozen states by the very functions the fold uses.
Both give the same states and triggers (docs/benchmarks.md, "The engine
alone").
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from streams.batch import UNKNOWN_DEADLINE, Batch, UserWork
from streams.churn import ChurnModel, returned, win_back
from streams.contract import Limits
from streams.derived import Alias, DerivedMessage, Due, Erase, Forward, Merge, ReferralCredit
from streams.events import Event
from streams.identity import (
    aliases_to_send,
    erasures_to_send,
    forward_to,
    merge_states,
    on_alias,
    on_erase,
)
from streams.policy import DEFAULT_POLICY, Policy, precomputed
from streams.referral import credits_to_send, on_referral_credit
from streams.state import apply, erased_marker, event_digest, fold_into
from streams.timed import deadline_of, decide_on_time, next_deadline, run_until
from streams.triggers import Trigger, decide_changes, decide_on_event
from streams.userstate import (
    ERASURE_EVENT,
    STAGE_ERASED,
    STAGE_MERGED,
    AnyState,
    UserState,
    fresh,
    thaw,
)


class Steps:
    """One input of one user at a time, with the policy and the churn model
    (:class:`~streams.engine.Engine` runs a batch of them)."""

    def __init__(
        self,
        policy: Policy = DEFAULT_POLICY,
        *,
        churn_model: ChurnModel | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.policy = policy
        #: the fitted churn model (None: its rule is off, as before the first fit)
        self.churn_model = churn_model
        self.limits = limits if limits is not None else Limits()
        #: the policy's precomputed values (computed again if the policy changes)
        self._pre = precomputed(policy)
        #: wall clock: look at every user at least this often, so that the
        #: time-dependent profile numbers (health, R, P(alive)) are never
        #: older than this (None: only when a rule needs it)
        self.refresh_ms: int | None = None
        #: a new churn model arrived at this time: every user evaluated before
        #: it is looked at again, spread over ``refresh_spread_ms``
        self.refresh_since_ms: int | None = None
        self.refresh_spread_ms = 600_000

    def next_deadline(self, state: AnyState | None) -> int | None:
        """When ``state`` next needs deciding on time (None: never)."""
        deadline = next_deadline(state, self.policy, self.churn_model)
        refresh = self._refresh_due(state)
        if refresh is None:
            return deadline
        return refresh if deadline is None else min(deadline, refresh)

    def _refresh_due(self, state: AnyState | None) -> int | None:
        """When ``state``'s profile numbers are next to be computed afresh."""
        if self.refresh_ms is None or state is None or state.event_count == 0:
            return None
        if state.stage in (STAGE_MERGED, STAGE_ERASED) or state.merged_into is not None:
            return None
        due = state.evaluated_ms + self.refresh_ms
        since = self.refresh_since_ms
        if since is not None and state.evaluated_ms < since:
            spread = zlib.crc32(state.user_id.encode()) % max(1, self.refresh_spread_ms)
            due = min(due, since + spread)
        return due

    # ---- one input of one user --------------------------------------------------
    def _event(self, w: UserWork, event: Event, out: Batch) -> None:
        """An event of the user's (from ``user-events``, or forwarded to it)."""
        if not self._fold_in_place(w, event, out):
            self._event_on_frozen(w, event, out)

    def _event_on_frozen(self, w: UserWork, event: Event, out: Batch) -> None:
        """:meth:`_event` in every case, on frozen states."""
        state = w.state
        forward = forward_to(state, event)
        if forward is not None:  # an anonymous id already merged into a user
            out.derived.append(forward)
            out.forwarded += 1
            return
        # deadlines that passed before this event are decided first, at their
        # own time, as a timer would have decided them
        policy = self.policy
        caught, timed = run_until(state, event.timestamp_ms - 1, policy, self.churn_model)
        new = apply(caught, event, policy)
        if new is caught and not timed:
            out.duplicates += new is not None  # a redelivered event: nothing changes
            return
        triggers = out.triggers
        triggers += timed
        triggers += decide_on_event(caught, new, event)
        triggers += win_back(caught, new, event, policy.delivery)
        out.derived += aliases_to_send(caught, event)
        out.derived += credits_to_send(caught, new, event)
        if new is None:  # erased: what remains is the marker, and of merged histories too
            out.erasures += 1
            out.derived += erasures_to_send(caught, event.timestamp_ms)
            new = erased_marker(event.timestamp_ms, caught)
        w.state = new
        w.changes += 1
        w.floor_ms = max(w.floor_ms, event.timestamp_ms - 1)

    def _fold_in_place(self, w: UserWork, event: Event, out: Batch) -> bool:
        """:meth:`_event` for the common case, on the mutable working state:
        a live user (or one never seen) with no deadline before the event,
        an event that is not an erasure and sends no internal message (no
        anonymous id to merge, no referrer named). Returns False, having
        changed nothing, for every other case: :meth:`_event` then decides it
        on frozen states, with exactly the same functions as always."""
        etype = event.type
        if (
            etype == ERASURE_EVENT
            or event.anonymous_id is not None
            or (etype == "signed_up" and "referrer_id" in event.properties)
        ):
            return False
        ts = event.timestamp_ms
        working = w.working
        stored = w.frozen if working is None else None
        state: AnyState | None = working if working is not None else stored
        pre = self._pre
        if pre.policy is not self.policy:
            pre = self._pre = precomputed(self.policy)
        if state is None:
            digest = event_digest(event.event_id)
            working = w.working = fresh(event.key, ts)
            fold_into(working, event, digest, pre)
            out.triggers += decide_changes(None, working, event)
        else:
            if state.stage == STAGE_ERASED or state.merged_into is not None:
                return False
            deadline = w.deadline
            if deadline == UNKNOWN_DEADLINE:
                deadline = w.deadline = deadline_of(state, pre, self.churn_model)
            if deadline is not None and deadline < ts:
                return False  # deadlines to decide first, at their own time
            digest = event_digest(event.event_id)
            if digest in state.recent_events:
                out.duplicates += 1  # a redelivered event: nothing changes
                return True
            stage, health, tier, segment = state.stage, state.health, state.tier, state.segment
            warned, last_seen = state.churn_warned_ms, state.last_seen_ms
            if working is None:
                assert stored is not None
                working = w.working = thaw(stored)
            fold_into(working, event, digest, pre)
            if (
                working.stage != stage
                or working.health != health
                or working.tier != tier
                or working.segment != segment
            ):  # a lifecycle change to announce
                before = (stage, health, tier, segment)
                out.triggers += decide_changes(before, working, event)
            if warned is not None:
                out.triggers += returned(warned, last_seen, working, event, pre.policy.delivery)
        w.deadline = UNKNOWN_DEADLINE
        w.changes += 1
        if ts - 1 > w.floor_ms:
            w.floor_ms = ts - 1
        return True

    def _message(self, w: UserWork, message: DerivedMessage, out: Batch) -> None:
        """An internal message for this user (see :mod:`streams.derived`)."""
        old = w.state
        policy = self.policy
        new: UserState | None = old
        triggers: list[Trigger] = []
        if isinstance(message, Forward):
            self._event(w, message.event, out)
            return
        if isinstance(message, Due):
            self._due(w, message.until_ms, out)
            return
        if isinstance(message, Alias):
            # like an event: the anonymous id's deadlines before the link are
            # decided first, at their own time, so that its snapshot does not
            # depend on whether an idle timer ran before the Alias arrived
            caught, triggers = run_until(old, message.at_ms - 1, policy, self.churn_model)
            marked, merge = on_alias(caught, message)
            if merge is not None:
                out.derived.append(merge)
            if marked == old:
                return  # a redelivered Alias: the same answer, nothing to store
            new = marked
            w.floor_ms = max(w.floor_ms, message.at_ms - 1)
        elif isinstance(message, Erase):
            erased = on_erase(old, message)
            if erased is old:
                return
            out.erasures += 1
            new = erased
        elif isinstance(message, Merge):
            if old is not None and old.stage == STAGE_ERASED and old.merged_into is None:
                # the user was erased while the merge was on its way: so is the history
                out.derived.append(Erase(message.user_id, message.anonymous_id, old.last_seen_ms))
                return
            merged = merge_states(old, message, policy)
            if merged is None or merged is old:
                return
            new = merged
            triggers = decide_on_event(old, merged, message.cause(merged.last_seen_ms))
        elif isinstance(message, ReferralCredit):
            # like an event: the referrer's deadlines before the credit come first
            caught, triggers = run_until(old, message.at_ms - 1, policy, self.churn_model)
            credited = on_referral_credit(caught, message, policy)
            if credited is old:
                return  # credited before (a redelivery), nothing was due
            new = credited
            if credited is not caught:
                triggers += decide_on_event(caught, credited, message.cause())
            w.floor_ms = max(w.floor_ms, message.at_ms - 1)
        out.triggers += triggers
        w.state = new
        w.changes += 1

    def _due(self, w: UserWork, until_ms: int, out: Batch) -> None:
        """The user's deadlines up to ``until_ms`` have passed: decide them."""
        new, timed = run_until(w.state, until_ms, self.policy, self.churn_model)
        refresh = self._refresh_due(new)
        if new is not None and refresh is not None and refresh <= until_ms:
            # the profile's numbers are due afresh: derived again as of now
            new, more = decide_on_time(new, until_ms, self.policy, self.churn_model)
            timed = [*timed, *more]
        w.floor_ms = max(w.floor_ms, until_ms)
        if new is w.state:
            return  # nothing changed: the deadline is scheduled again
        out.triggers += timed
        w.state = new
        w.changes += 1


@dataclass(slots=True)
class Folded:
    """What one user's inputs did (:func:`fold`)."""

    state: UserState | None
    changes: int
    erased: bool
    triggers: list[Trigger]
    derived: list[DerivedMessage]


def fold(
    state: UserState | None,
    inputs: Iterable[Event | DerivedMessage],
    policy: Policy = DEFAULT_POLICY,
    churn_model: ChurnModel | None = None,
) -> Folded:
    """One user's inputs (events, or internal messages for the user) folded
    exactly as :meth:`~streams.engine.Engine.run` folds them, without records or deadlines
    due: the per-user step on its own, for tests and benchmarks."""
    engine = Steps(policy, churn_model=churn_model)
    w = UserWork(state, state.revision if state is not None else 0)
    out = Batch()
    for item in inputs:
        if isinstance(item, Event):
            engine._event(w, item, out)
        else:
            engine._message(w, item, out)
    return Folded(w.state, w.changes, out.erasures > 0, out.triggers, out.derived)
