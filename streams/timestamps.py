"""The envelope's timestamp (``$.timestamp``): epoch milliseconds, or
ISO-8601 with a zone, read into epoch ms — with rejections that name what a
producer most likely got wrong (seconds or microseconds for milliseconds, a
zone-less time, a clock ahead). Nothing here reads a clock: ``now_ms`` is
passed in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streams.contract import ISO_TIMESTAMP_PATTERN, MIN_TIMESTAMP_MS, Limits
from streams.errors import EventError
from streams.event_fields import quoted, wrong_type

# the contract's pattern, and the zone-less timestamp a hint is given for
_ZONELESS_PATTERN: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
)
_ISO_RE: Final = re.compile(ISO_TIMESTAMP_PATTERN)
_ZONELESS_RE: Final = re.compile(_ZONELESS_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def parse_timestamp(value: Any, now_ms: int, limits: Limits) -> int:
    """The event time ``value`` of ``$.timestamp`` as epoch ms — epoch ms, or
    ISO-8601 with a zone — checked against the earliest accepted time and
    against the clock ``now_ms`` with ``limits``' skew; else an
    :class:`~streams.errors.EventError` that says what to send instead."""
    path = "$.timestamp"
    kind = type(value)
    if kind is int:
        ts: int = value
        if ts < MIN_TIMESTAMP_MS:
            if MIN_TIMESTAMP_MS <= ts * 1000 <= now_ms + limits.max_future_skew_ms:
                raise EventError(
                    "bad_timestamp",
                    path,
                    f"timestamp {ts} looks like epoch seconds; send epoch milliseconds "
                    f"({ts * 1000}) or ISO-8601 with a zone",
                )
            raise EventError(
                "bad_timestamp",
                path,
                f"timestamp {ts} is before 1973-03-03T09:46:40Z ({MIN_TIMESTAMP_MS} ms), "
                "the earliest accepted; send epoch milliseconds",
            )
    elif kind is str:
        ts = _iso_timestamp(value)
    elif value is None:
        raise EventError(
            "missing_field", path, "timestamp is required: epoch ms or ISO-8601 with a zone"
        )
    elif kind is float:
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {value!r} is not a whole number: send integer epoch milliseconds "
            "(no decimal point or exponent)",
        )
    else:
        raise wrong_type("$", "timestamp", "epoch milliseconds or an ISO-8601 string", value)
    ahead = ts - now_ms
    if ahead > limits.max_future_skew_ms:
        raise EventError(
            "future_timestamp",
            path,
            f"timestamp is {_duration(ahead)} ahead of the pipeline clock; the allowed skew is "
            f"{_duration(limits.max_future_skew_ms)}{_unit_hint(value, now_ms, limits)}",
        )
    return ts


def _iso_timestamp(value: str) -> int:
    path = "$.timestamp"
    if _ISO_RE.fullmatch(value) is None:
        if _ZONELESS_RE.fullmatch(value) is not None:
            raise EventError(
                "bad_timestamp",
                path,
                f"timestamp {quoted(value)} has no zone; add one (Z or +02:00), "
                "e.g. 2024-05-01T12:00:00Z",
            )
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {quoted(value)} is not ISO-8601; expected e.g. 2024-05-01T12:00:00Z, "
            "2024-05-01T14:00:00.250+02:00, or epoch milliseconds",
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise EventError(
            "bad_timestamp", path, f"timestamp {quoted(value)} is not a real time: {exc}"
        ) from None
    ts = (parsed - _EPOCH) // _ONE_MS
    if ts < MIN_TIMESTAMP_MS:
        raise EventError(
            "bad_timestamp",
            path,
            f"timestamp {quoted(value)} is before 1973-03-03T09:46:40Z, the earliest accepted",
        )
    return ts


def _duration(ms: int) -> str:
    if ms >= 2 * 86_400_000:
        return f"{ms // 86_400_000:,} days"
    seconds, millis = divmod(ms, 1000)
    return f"{seconds} s" if millis == 0 else f"{seconds}.{millis:03d} s"


def _unit_hint(value: Any, now_ms: int, limits: Limits) -> str:
    if type(value) is not int:
        return ""
    for unit, divisor in (("microseconds", 1000), ("nanoseconds", 1_000_000)):
        if abs(value // divisor - now_ms) <= max(limits.max_future_skew_ms, 86_400_000):
            return f"; {value} looks like epoch {unit}: send milliseconds"
    return "; check the producer's clock"
