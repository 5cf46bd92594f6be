"""The profile: what is mirrored to Redis and snapshotted into triggers."""

from __future__ import annotations

from typing import Any

from streams.state import UserState


def profile_snapshot(state: UserState) -> dict[str, Any]:
    """The profile context a trigger carries so a consumer need not look it up."""
    return {
        "stage": state.stage,
        "first_seen": state.first_seen_ms,
        "last_seen": state.last_seen_ms,
        "event_count": state.event_count,
    }


def profile_fields(state: UserState, *, version: int) -> dict[str, str]:
    """The flat field map of the user's Redis hash. ``version`` orders writes:
    the projection never lets an older version overwrite a newer one."""
    fields = {k: str(v) for k, v in profile_snapshot(state).items()}
    fields["user_id"] = state.user_id
    if state.merged_into is not None:
        fields["merged_into"] = state.merged_into
    if state.merged_from:
        fields["merged_from"] = ",".join(state.merged_from)
    fields["version"] = str(version)
    return fields
