"""One batch of the engine (:meth:`streams.engine.Engine.run`): what comes in
(:class:`Record` s, or internal messages already decoded: :data:`Input`),
each user's state while the batch works on it (:class:`UserWork`), and what
the batch did (:class:`Batch`: the writes, triggers, internal messages and
dead letters, and the counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streams.derived import DerivedMessage
from streams.errors import EventError, StateError
from streams.triggers import Trigger
from streams.userstate import AnyState, UserState, WorkingState, evolve, freeze


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a partition, as read: the key and value bytes and the offset."""

    key: bytes | None
    value: bytes | None
    offset: int
    #: from the internal topic (``user-events.derived``), not ``user-events``
    derived: bool = False


#: What a batch holds: records as read, or internal messages already decoded
#: (the back-test hands them over without encoding them).
Input = Record | DerivedMessage


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An invalid record and why: it goes to the dead-letter topic untouched."""

    record: Record
    error: EventError


@dataclass(frozen=True, slots=True)
class Malformed:
    """An internal message that could not be decoded (a bug, not bad input)."""

    record: Record
    error: StateError


@dataclass(slots=True)
class Batch:
    """What one batch did: write, send and count this."""

    #: one state per changed user, revision advanced (an erasure leaves its marker)
    writes: dict[bytes, UserState] = field(default_factory=dict)
    triggers: list[Trigger] = field(default_factory=list)
    #: internal messages for other keys' partitions (``user-events.derived``)
    derived: list[DerivedMessage] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    #: valid events of ``user-events`` (forwarded events count where they land)
    events: int = 0
    #: those events by type
    types: dict[str, int] = field(default_factory=dict)
    #: the earliest of their event times
    earliest_ms: int | None = None
    #: events that changed nothing (an event id the user had already seen)
    duplicates: int = 0
    #: records at or below their user's applied offset: delivered again after
    #: a crash or rebalance, skipped (docs/reliability.md)
    redelivered: int = 0
    #: the users of those records (their profiles are projected again)
    redelivered_keys: list[bytes] = field(default_factory=list)
    #: events of anonymous ids already merged, sent on to their user
    forwarded: int = 0
    #: users whose deadlines were decided because they were due
    timers_fired: int = 0
    #: changes folded into the writes (a user's revision advances by its share)
    changes: int = 0
    #: users erased (``user_deleted``)
    erasures: int = 0


Loader = Callable[[bytes], UserState | None]


#: :attr:`UserWork.deadline` not computed since the state last changed
UNKNOWN_DEADLINE = -1


class UserWork:
    """A user's state inside one batch: stored (:attr:`frozen`) or, once an
    event was folded into it, mutable (:attr:`working`; :attr:`frozen` is
    then stale) until something needs it frozen again — reading
    :attr:`state` freezes it."""

    __slots__ = (
        "base_revision", "changes", "deadline", "derived_offset", "events_offset", "floor_ms",
        "frozen", "working",
    )  # fmt: skip

    def __init__(self, state: UserState | None, base_revision: int) -> None:
        self.frozen = state
        self.working: WorkingState | None = None
        self.base_revision = base_revision
        self.changes = 0
        #: the last record offsets applied, per input topic (stored with the state)
        self.events_offset = state.events_offset if state is not None else -1
        self.derived_offset = state.derived_offset if state is not None else -1
        #: the latest time deadlines were decided up to (a guard against a
        #: deadline that deciding does not move)
        self.floor_ms = 0
        #: next_deadline of the current state (:data:`UNKNOWN_DEADLINE`: not computed yet)
        self.deadline: int | None = UNKNOWN_DEADLINE

    @property
    def state(self) -> UserState | None:
        if self.working is not None:
            self.frozen = freeze(self.working)
            self.working = None
        return self.frozen

    @state.setter
    def state(self, state: UserState | None) -> None:
        self.frozen = state
        self.working = None
        self.deadline = UNKNOWN_DEADLINE

    @property
    def current(self) -> AnyState | None:
        """The state as it is now, frozen or not (for reading only)."""
        return self.working if self.working is not None else self.frozen

    def stored(self, revision: int) -> UserState | None:
        """The state to write, its revision set to ``revision`` and its
        applied offsets to the last records applied."""
        working = self.working
        if working is None:
            state = self.frozen
            if state is None:
                return None
            changes = {"revision": revision, "events_offset": self.events_offset}
            changes["derived_offset"] = self.derived_offset
            return evolve(state, changes)
        working.revision = revision
        working.events_offset = self.events_offset
        working.derived_offset = self.derived_offset
        self.working = None
        self.frozen = freeze(working)
        return self.frozen
