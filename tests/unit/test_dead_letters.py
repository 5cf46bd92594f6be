"""A dead letter too big to carry its original goes by reference, and the
`dlq` commands say so instead of exporting a cut value as an event."""

from __future__ import annotations

from agents.commands.dlq import _unexportable, format_dead_letter
from agents.kafka.deadletters import PREVIEW_BYTES, DeadLetter, dead_letter_record
from streams.errors import EventError

ERROR = EventError("too_large", "$", "record is too big")


def letter_of(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> DeadLetter:
    return DeadLetter.from_record(0, 7, 0, key, value, dict(headers))


def test_a_record_that_fits_is_dead_lettered_untouched() -> None:
    value = b'{"x":"' + b"y" * 5000 + b'"}'
    key, kept, headers = dead_letter_record(
        ERROR, "user-events", 2, 41, b"u1", value, max_bytes=10_000
    )
    assert (key, kept) == (b"u1", value)
    letter = letter_of(key, kept, headers)
    assert not letter.truncated and letter.source_size is None
    assert _unexportable(letter) == ""


def test_a_record_over_the_limit_is_dead_lettered_by_reference() -> None:
    value = b'{"x":"' + b"y" * 20_000 + b'"}'
    key, kept, headers = dead_letter_record(
        ERROR, "user-events", 2, 41, b"u1", value, max_bytes=10_000
    )
    assert key == b"u1"
    assert kept == value[:PREVIEW_BYTES]
    letter = letter_of(key, kept, headers)
    assert letter.truncated and letter.source_size == len(value)
    assert letter.source == "user-events[2]@41" and letter.code == "too_large"
    assert "read it whole at user-events[2]@41" in _unexportable(letter)
    assert f"the original ({len(value):,} bytes)" in format_dead_letter(letter)
