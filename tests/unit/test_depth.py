"""One nesting-depth limit, end to end (issue #15): what the parser accepts
every re-encoding of the event can write — the forward of an event of an
anonymous id already merged, the canonical record — and one level more is a
dead letter with its own code, never a crashed agent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.batch import Record
from streams.contract import DEFAULT_LIMITS, REJECTION_CODES
from streams.derived import Alias, Forward, decode_derived, encode_derived
from streams.engine import Engine
from streams.errors import EventError
from streams.events import encode_event, parse_event
from streams.identity import on_alias
from streams.partition import Partition
from streams.userstate import UserState

NOW = 1_700_000_000_000
MAX = DEFAULT_LIMITS.max_depth


def record(depth: int, anonymous_id: str = "anon-1", timestamp_ms: int = NOW - 1000) -> bytes:
    """An event of ``anonymous_id`` whose document is ``depth`` levels deep
    (the document itself and ``context`` are two of them), written by hand:
    orjson would refuse to write the deepest."""
    inner = depth - 2
    deep = b'{"a":' * (inner - 1) + b"{}" + b"}" * (inner - 1)
    head = {"event_id": f"e-{depth}", "type": "page_viewed", "anonymous_id": anonymous_id}
    raw = orjson.dumps({**head, "timestamp": timestamp_ms})[:-1]
    raw += b',"context":{"deep":' + deep + b"}}"
    if depth < 200:
        assert depth_of(orjson.loads(raw)) == depth
    return raw


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def merged_anonymous() -> UserState:
    """``anon-1``'s state once it was merged into ``u-1``."""
    marked, _ = on_alias(None, Alias("u-1", "anon-1", NOW - 5000))
    assert marked is not None and marked.merged_into == "u-1"
    return marked


def test_the_limit_is_below_what_every_re_encoding_supports() -> None:
    assert 16 <= MAX <= 200  # orjson writes 254 levels, reads 1024
    assert "too_deep" in REJECTION_CODES


def test_an_event_at_the_limit_is_accepted_and_forwarded_to_its_merged_user() -> None:
    raw = record(MAX)
    event = parse_event(raw, now_ms=NOW)
    assert parse_event(encode_event(event), now_ms=NOW) == event
    out = Engine().run(
        Partition(0), [Record(b"anon-1", raw, 0)], lambda key: merged_anonymous(), now_ms=NOW
    )
    assert not out.dead_letters
    [forward] = out.derived
    assert isinstance(forward, Forward) and forward.user_id == "u-1"
    decoded = decode_derived(encode_derived(forward))  # the re-encoding of the forward path
    assert isinstance(decoded, Forward) and decoded.event == forward.event
    assert decoded.event.context == event.context


def test_one_level_over_the_limit_is_dead_lettered_with_its_own_code() -> None:
    raw = record(MAX + 1)
    with pytest.raises(EventError) as caught:
        parse_event(raw, now_ms=NOW)
    error = caught.value
    assert error.code == "too_deep"
    assert error.path.startswith("$.context.deep.a")
    assert f"the limit is {MAX}" in error.message
    out = Engine().run(
        Partition(0), [Record(b"anon-1", raw, 0)], lambda key: merged_anonymous(), now_ms=NOW
    )
    assert [d.error.code for d in out.dead_letters] == ["too_deep"]
    assert not out.derived


@pytest.mark.parametrize("depth", [300, 1000])
def test_far_deeper_documents_are_dead_lettered_too(depth: int) -> None:
    """Deeper than any re-encoding can write, but that orjson still reads."""
    with pytest.raises(EventError) as caught:
        parse_event(record(depth), now_ms=NOW)
    assert caught.value.code == "too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    doc = {
        "event_id": "e-1",
        "type": "page_viewed",
        "user_id": "u-1",
        "timestamp": NOW - 1000,
        "properties": {"url": "[" * 500 + "{" * 500},
    }
    assert parse_event(orjson.dumps(doc), now_ms=NOW).properties["url"].startswith("[[[")
