"""Hostile input for the fault suite (issue #15): records that break the
event contract in every way the parser names, and records that look hostile
but keep it — each labelled with what the worker must do with it.

:func:`hostile_mix` interleaves them, deterministically from a seed, with
the valid events of :func:`benchmarks.generator.generate`. A record's label
(:attr:`Record.expect`) is the rejection code the worker must dead-letter it
with, or :data:`APPLIED`: a nasty but valid record (ids full of Redis glob
characters, RTL marks and emoji, NUL escapes in text, nesting at the depth
limit, a value of exactly the size limit, duplicate event ids …) that must be
applied, never rejected. The labels are the generator's intent;
``tests/faults/test_hostile.py`` checks them against the engine.

Rules that keep a live worker and the verifier's back-test comparable:

- an applied record is never late for a user that already has state (a live
  stream-clock worker's timer may have decided its deadlines; the back-test
  decides them on the user's next event): it carries the time of the valid
  event before it, an old timestamp only on the first and only event of a
  new user, and a re-sent event id only the user's latest (inside the
  de-duplication window);
- what crosses partitions (an identity merge, a referral credit) lands on the
  worker "a moment later", on the back-test at once; a worker that is behind
  makes that moment long. So the records whose outcome depends on it come in
  phases (:attr:`Record.phase`), each sent once the worker has committed
  everything of the one before: 1, the stream, with sign-ups naming a
  referrer (a new id each, credited once); 2, anonymous visits; 3, their
  merges into new users; 4, an event of each merged anonymous id
  (forwarded), the referrers' first events of their own, and one event of
  every nasty id. Phases 2 to 4 carry the stream's last time;
- timestamps in the future of the wall clock (``future_timestamp/wall``:
  :data:`WALL_CLOCK_FUTURE_MS` or more past ``wall_ms``) are rejected by a
  worker but not by the back-test's engine, which has no wall clock.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import orjson

from benchmarks.generator import Dataset
from streams.contract import DEFAULT_LIMITS, MIN_TIMESTAMP_MS, Limits
from tests.faults.hostile_patches import DROP, PATCHES

#: the label of a record that must be applied (not dead-lettered)
APPLIED: Final = "applied"
#: wall-clock future timestamps are at least this far past ``wall_ms``
WALL_CLOCK_FUTURE_MS: Final = 86_400_000

#: user ids that are valid and hostile: Redis glob and separator characters,
#: other keys' prefixes, bidi controls, emoji, look-alikes, the longest id
NASTY_IDS: Final = (
    "*", "u*", "u?", "?", "[ab]", "[", "]", "a\\b", "\\", "x:y", ":", "::*", "u1*", "u1:",
    "profile:u1", "idx:stage:new", "idxvals:stage", "idxdims", "environment", "erased:u1",
    "{tag}", " lead", "trail ", "%s%d%n", "' OR '1'='1", "../../etc/passwd", "\\u0000",
    "\u200fRTL\u200e", "\u202eevil", "emoji-😀🔥", "zwj-👩\u200d💻", "e\u0301-combining",
    "用户-42", "\ufeffbom-in-id", "\u2028line-sep", "null", "None", "true", "0", "-1",
    "1e3", "a,b", "ß", "İ", "x" * 256,
)  # fmt: skip
#: valid properties of the types the kinds start from
_PROPS: Final[Mapping[str, dict[str, Any]]] = {
    "page_viewed": {"path": "/h", "title": "Hostile"},
    "product_viewed": {"product_id": "sku-1", "price": 19.9, "currency": "EUR"},
    "product_added": {"product_id": "sku-1", "quantity": 1, "price": 19.9, "cart_id": "c-h", "currency": "EUR"},
    "order_completed": {"order_id": "o-h", "revenue": 19.9, "currency": "EUR", "products": [{"product_id": "sku-1", "quantity": 1, "price": 19.9}]},
    "order_refunded": {"order_id": "o-h", "amount": 5.0, "currency": "EUR"},
    "consent_updated": {"channels": {"email": True}},
    "session_started": {"session_id": "s-h"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # "<expected>/<variant>", or "valid" for a generator event
    key: bytes | None
    value: bytes | None
    expect: str  # APPLIED or the rejection code
    phase: int = 1  # sent once the worker has committed every record of the phases before


@dataclass
class Mix:
    records: list[Record]

    def phase(self, number: int) -> list[Record]:
        return [r for r in self.records if r.phase == number]

    def hostile(self) -> list[Record]:
        return [r for r in self.records if r.kind != "valid"]

    def by_kind(self) -> Counter[str]:
        return Counter(r.kind for r in self.hostile())

    def by_expect(self) -> Counter[str]:
        return Counter(r.expect for r in self.hostile())


@dataclass
class _Context:
    rng: random.Random
    wall_ms: int
    limits: Limits
    users: list[str]  # the generator's users
    seed: int
    now_ms: int = 0  # the time of the valid event before this record
    n: int = 0
    #: each user's latest applied (key, value): what may be re-sent as it is
    latest: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    #: (user, time) of each erasure: at most one per user and time (see _lifecycle)
    #: (phase, builder) of the records to send in a later phase
    later: list[tuple[int, Callable[[_Context], list[Record]]]] = field(default_factory=list)

    def fresh(self, name: str) -> str:
        self.n += 1
        return f"{name}-{self.seed}-{self.n}"

    def someone(self) -> str:
        if self.rng.random() < 0.5:
            return self.rng.choice(self.users)
        return self.rng.choice(NASTY_IDS)


def _event(ctx: _Context, user: str, etype: str = "page_viewed") -> dict[str, Any]:
    return {
        "event_id": ctx.fresh("h"),
        "type": etype,
        "user_id": user,
        "timestamp": ctx.now_ms,
        "properties": dict(_PROPS.get(etype, {})),
        "context": {"channel": "web"},
    }


def _patched(doc: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for name, value in patch.items():
        if value and isinstance(value, dict) and isinstance(out.get(name), dict):
            value = _patched(out[name], value)
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


#: where a nested value given as bytes goes (orjson writes at most 254 levels)
_NEST: Final = "__nest__"


def _dumps(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _record(
    ctx: _Context, kind: str, doc: dict[str, Any], key: Any = None, nest: bytes = b""
) -> Record:
    expect = kind.split("/", 1)[0]
    value = _dumps(doc)
    if nest:
        value = value.replace(b'"' + _NEST.encode() + b'"', nest, 1)
    if key is None:
        user = doc.get("user_id") or doc.get("anonymous_id")
        key = user.encode() if type(user) is str else b"u0"
    if expect == APPLIED and type(doc.get("user_id")) is str:
        ctx.latest[doc["user_id"]] = (key, value)
    return Record(kind, key, value, expect)


def _iso(ms: int, offset_minutes: int = 0, sep: str = "T") -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone)
    text = moment.isoformat(sep=sep, timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _nested(levels: int, *, arrays: bool = False) -> bytes:
    """JSON nested ``levels`` deep (objects, or objects and arrays in turn)."""
    opens = ["[" if arrays and i % 2 else '{"n":' for i in range(levels)]
    closes = ["]" if arrays and i % 2 else "}" for i in reversed(range(levels))]
    return ("".join(opens) + "1" + "".join(closes)).encode()


def _padded(ctx: _Context, kind: str, size: int, unit: str = "x") -> Record:
    """A valid page view of exactly ``size`` bytes (its title padded)."""
    doc = _event(ctx, ctx.someone())
    doc["properties"]["title"] = ""
    room = size - len(orjson.dumps(doc))
    width = len(unit.encode())
    doc["properties"]["title"] = unit * (room // width) + "x" * (room % width)
    return _record(ctx, kind, doc)


def _raw(kind: str, value: bytes | None, key: bytes | None = b"u0") -> Callable[[_Context], Any]:
    return lambda ctx: Record(kind, key, value, kind.split("/", 1)[0])


def _raw_event(kind: str, make: Callable[[bytes], bytes]) -> Callable[[_Context], Record]:
    """The bytes of a valid event, changed by ``make``."""

    def build(ctx: _Context) -> Record:
        doc = _event(ctx, "u0")
        return Record(kind, b"u0", make(orjson.dumps(doc)), kind.split("/", 1)[0])

    return build


def _from_patch(kind: str, patch: Mapping[str, Any]) -> Callable[[_Context], Record]:
    def build(ctx: _Context) -> Record:
        patch_ = dict(patch)
        etype = patch_.pop("$type", "page_viewed")
        key = patch_.pop("$key", None)
        user = ctx.someone() if kind.startswith(APPLIED) else ctx.rng.choice(ctx.users)
        doc = _patched(_event(ctx, user, etype), patch_)
        record = _record(ctx, kind, doc, key=b"" if key is DROP else key)
        return Record(kind, None, record.value, record.expect) if key is DROP else record

    return build


#: a valid time written another way: an ISO string of the record's instant
_TIMES: Final[Mapping[str, Callable[[int], str]]] = {
    "applied/iso_offset": lambda ms: _iso(ms, 14 * 60),
    "applied/iso_negative_offset": lambda ms: _iso(ms, -(9 * 60 + 30)),
    "applied/iso_space": lambda ms: _iso(ms, 0, " "),
    "applied/iso_nanoseconds": lambda ms: _iso(ms)[:-1] + "000000Z",
}
#: a time at least WALL_CLOCK_FUTURE_MS past the wall clock, as a worker sees it
_FUTURES: Final[Mapping[str, Callable[[int], int | str]]] = {
    "future_timestamp/wall_ms": lambda wall: wall + WALL_CLOCK_FUTURE_MS,
    "future_timestamp/wall_iso": lambda wall: _iso(wall + 400 * WALL_CLOCK_FUTURE_MS),
    "future_timestamp/year_2100": lambda wall: "2100-01-01T00:00:00Z",
    "future_timestamp/microseconds": lambda wall: wall * 1_000,
    "future_timestamp/nanoseconds": lambda wall: wall * 1_000_000,
}


def _timed(kind: str, write: Callable[[int], int | str]) -> Callable[[_Context], Record]:
    """A page view whose timestamp ``write`` gives from the record's time (an
    applied kind) or from the wall clock (a future one)."""

    def build(ctx: _Context) -> Record:
        applied = kind.startswith(APPLIED)
        doc = _event(ctx, ctx.someone() if applied else ctx.rng.choice(ctx.users))
        doc["timestamp"] = write(ctx.now_ms if applied else ctx.wall_ms)
        return _record(ctx, kind, doc)

    return build


def _ancient(ctx: _Context) -> Record:
    """The first and only event of a new user, at the earliest time accepted."""
    doc = _event(ctx, ctx.fresh(ctx.rng.choice(NASTY_IDS)[:200]))
    doc["timestamp"] = ctx.rng.choice([MIN_TIMESTAMP_MS, "1973-03-03T09:46:40Z", 978_307_200_000])
    return _record(ctx, "applied/ancient_new_user", doc)


def _resent(ctx: _Context) -> Record:
    """A user's latest event again: as it is, or its event id on other content."""
    user = ctx.rng.choice(sorted(ctx.latest)) if ctx.latest else "u0"
    key, value = ctx.latest.get(user, (b"u0", orjson.dumps(_event(ctx, "u0"))))
    if ctx.rng.random() < 0.5:
        return Record("applied/same_bytes_again", key, value, APPLIED)
    doc = orjson.loads(value)
    doc["properties"] = {"title": "same id, other content"}
    doc["type"] = "page_viewed"
    return Record("applied/same_id_other_content", key, orjson.dumps(doc), APPLIED)


def _lifecycle(ctx: _Context) -> list[Record]:
    """A nasty user's journey: sign-up (referred by a new nasty id, whose own
    first event comes in phase 4 — or never: a user known only as a referrer
    is a user too, with a profile), a cart, an order, sometimes erasure —
    more than one erasure of a user at the same event time included (each
    life after them has trigger ids of its own)."""
    user = ctx.rng.choice(NASTY_IDS)
    steps = ["signed_up", "product_added", "checkout_started", "order_completed", "user_deleted"]
    out = []
    for etype in steps[: ctx.rng.randrange(1, len(steps) + 1)]:
        doc = _event(ctx, user, etype)
        if etype == "signed_up":
            referrer = ctx.fresh("ref" + ctx.rng.choice(NASTY_IDS)[:8])
            doc["properties"] = {"referrer_id": referrer}
            if ctx.rng.random() < 0.5:
                ctx.later.append((4, _first_own_event(referrer)))
        if etype == "checkout_started":
            doc["properties"] = {"cart_id": "c-h", "value": 19.9, "currency": "EUR"}
        out.append(_record(ctx, "applied/nasty_user_journey", doc))
    return out


def _first_own_event(user: str) -> Callable[[_Context], list[Record]]:
    return lambda ctx: [_record(ctx, "applied/nasty_user_event", _event(ctx, user))]


def _identity(ctx: _Context) -> list[Record]:
    """In phase 2 an anonymous visitor (a nasty id), in phase 3 its merge
    into a new user, in phase 4 an event of the merged id nested to the depth
    limit (forwarded to the user: one level deeper than the record)."""
    anon = ctx.fresh("anon" + ctx.rng.choice(NASTY_IDS)[:16])
    user = ctx.fresh("known" + ctx.rng.choice(NASTY_IDS)[:16])

    def visit(ctx: _Context) -> list[Record]:
        doc = _event(ctx, user)
        del doc["user_id"]
        doc["anonymous_id"] = anon
        return [_record(ctx, "applied/anonymous_visit", doc)]

    def merge(ctx: _Context) -> list[Record]:
        doc = _event(ctx, user, "user_identified")
        doc["anonymous_id"] = anon
        del doc["properties"]
        return [_record(ctx, "applied/identity_merge", doc, key=user.encode())]

    def deep(ctx: _Context) -> list[Record]:
        doc = _event(ctx, user)
        del doc["user_id"]
        doc["anonymous_id"] = anon
        doc["properties"]["nest"] = _NEST
        nest = _nested(ctx.limits.max_depth - 2, arrays=True)
        return [_record(ctx, "applied/deep_event_of_merged_id", doc, nest=nest)]

    ctx.later += [(2, visit), (3, merge), (4, deep)]
    return []


#: where a value is nested, how deep (levels below the limit, or absolute), in arrays too
_DEPTHS: Final[Mapping[str, tuple[str, int, bool]]] = {
    "applied/depth_at_limit": ("properties", 0, False),
    "applied/arrays_at_limit": ("properties", 0, True),
    "applied/context_at_limit": ("context", 0, True),
    "too_deep/one_over": ("properties", 1, False),
    "too_deep/arrays_one_over": ("context", 1, True),
    "too_deep/thousand": ("properties", 1_000, True),  # orjson reads 1,024 levels
}


def _deep(kind: str) -> Callable[[_Context], Record]:
    where, over, arrays = _DEPTHS[kind]

    def build(ctx: _Context) -> Record:
        # the record is level 1, properties or context 2: its member nests from 3 on
        levels = over if over > 1 else ctx.limits.max_depth - 2 + over
        doc = _event(ctx, ctx.someone())
        doc[where]["nest"] = _NEST
        return _record(ctx, kind, doc, nest=_nested(levels, arrays=arrays))

    return build


def _braces(ctx: _Context) -> Record:
    doc = _event(ctx, ctx.someone())
    doc["properties"]["title"] = "{[" * 500
    return _record(ctx, "applied/braces_in_strings", doc)


#: a valid page view padded to (the size limit + offset) bytes, or to an absolute size
_SIZES: Final[Mapping[str, tuple[int, str]]] = {
    "applied/size_at_limit": (0, "x"),
    "applied/emoji_at_limit": (0, "😀"),
    "applied/accents_at_limit": (0, "é"),
    "too_large/one_over": (1, "x"),
    "too_large/emoji_one_over": (1, "😀"),
    "too_large/300k": (300_000, "x"),
    "too_large/900k": (900_000, "x"),
    "too_large/999k": (999_900, "x"),  # with its headers over the producer's limit: by reference
}


def _sized(kind: str) -> Callable[[_Context], Record]:
    offset, unit = _SIZES[kind]
    return lambda ctx: _padded(
        ctx, kind, offset if offset > 1 else ctx.limits.max_bytes + offset, unit
    )


def _duplicate_keys(ctx: _Context) -> Record:
    user = ctx.rng.choice(ctx.users)
    doc = _event(ctx, user)
    body = orjson.dumps(doc)[1:]
    value = b'{"user_id":"*","type":"signed_up",' + body  # the last one wins: valid
    return Record("applied/duplicate_json_keys", user.encode(), value, APPLIED)


_KINDS: Final[dict[str, tuple[float, Callable[[_Context], Any]]]] = {
    **{kind: (1.0, _from_patch(kind, patch)) for kind, patch in PATCHES.items()},
    "not_json/garbage": (1.0, _raw("not_json/garbage", b"hello, world")),
    "not_json/empty": (1.0, _raw("not_json/empty", b"")),
    "not_json/null_value": (1.0, _raw("not_json/null_value", None)),
    "not_json/whitespace": (1.0, _raw("not_json/whitespace", b" \r\n\t ")),
    "not_json/nan": (1.0, _raw("not_json/nan", b'{"event_id":"e","timestamp":NaN}')),
    "not_json/infinity": (1.0, _raw("not_json/infinity", b'{"price":1e400}')),
    "not_json/single_quotes": (1.0, _raw("not_json/single_quotes", b"{'event_id':'e'}")),
    "not_json/comment": (1.0, _raw("not_json/comment", b'{"a":1 /* c */}')),
    "not_json/lone_surrogate": (1.0, _raw("not_json/lone_surrogate", b'{"user_id":"\\ud800"}')),
    "not_json/too_deep_to_parse": (1.0, _raw("not_json/too_deep_to_parse", b"[" * 2000)),
    "not_json/bom": (1.0, _raw_event("not_json/bom", lambda v: b"\xef\xbb\xbf" + v)),
    "not_json/truncated": (3.0, _raw_event("not_json/truncated", lambda v: v[: len(v) // 2])),
    "not_json/trailing_comma": (1.0, _raw_event("not_json/trailing_comma", lambda v: v[:-1] + b",}")),
    "not_json/two_objects": (1.0, _raw_event("not_json/two_objects", lambda v: v + v)),
    "not_json/trailing_garbage": (1.0, _raw_event("not_json/trailing_garbage", lambda v: v + b"x")),
    "not_object/array": (1.0, _raw_event("not_object/array", lambda v: b"[" + v + b"]")),
    "not_object/string": (1.0, _raw("not_object/string", b'"page_viewed"')),
    "not_object/number": (1.0, _raw("not_object/number", b"42")),
    "not_object/null": (1.0, _raw("not_object/null", b"null")),
    "not_object/true": (1.0, _raw("not_object/true", b"true")),
    "not_object/empty_array": (1.0, _raw("not_object/empty_array", b"[]")),
    "invalid_utf8/ff": (1.0, _raw("invalid_utf8/ff", b"\xff\xfe{}")),
    "invalid_utf8/latin1_id": (1.0, _raw_event("invalid_utf8/latin1_id", lambda v: v.replace(b'"u0"', b'"\xe9"', 1))),
    "invalid_utf8/surrogate_bytes": (1.0, _raw_event("invalid_utf8/surrogate_bytes", lambda v: v.replace(b"Hostile", b"\xed\xa0\x80"))),
    "invalid_utf8/overlong": (1.0, _raw_event("invalid_utf8/overlong", lambda v: v.replace(b"/h", b"\xc0\xaf"))),
    "too_large/garbage": (0.1, _raw("too_large/garbage", b"\xff" * 70_000)),
    "applied/whitespace_around": (1.0, _raw_event("applied/whitespace_around", lambda v: b"\n\t " + v + b" \r\n")),
    **{kind: (1.0, _timed(kind, write)) for kind, write in _TIMES.items()},
    **{kind: (0.5, _timed(kind, write)) for kind, write in _FUTURES.items()},
    **{kind: (0.5, _deep(kind)) for kind in _DEPTHS},
    **{kind: (0.1 if "at_limit" in kind or "one_over" in kind else 0.005, _sized(kind)) for kind in _SIZES},
    "applied/ancient_new_user": (1.0, _ancient),
    "applied/resent": (6.0, _resent),
    "applied/nasty_user_journey": (10.0, _lifecycle),
    "applied/identity": (1.0, _identity),
    "applied/duplicate_json_keys": (1.0, _duplicate_keys),
    "applied/braces_in_strings": (1.0, _braces),
}  # fmt: skip


def hostile_mix(
    valid: Dataset,
    hostile: int,
    *,
    seed: int,
    wall_ms: int,
    limits: Limits = DEFAULT_LIMITS,
) -> Mix:
    """About ``hostile`` hostile records (at least that many; every kind at
    least once) spread at random among ``valid``'s events, in their order."""
    rng = random.Random(seed)
    users = sorted({k.decode() for k in valid.keys})
    ctx = _Context(rng, wall_ms, limits, users, seed)
    names = list(_KINDS)
    weights = [_KINDS[n][0] for n in names]
    plan = names + rng.choices(names, weights, k=max(0, hostile - len(names)))
    rng.shuffle(plan)
    slots = sorted(rng.randrange(len(valid) + 1) for _ in plan)
    times = [orjson.loads(v)["timestamp"] for v in valid.values]
    records: list[Record] = []
    step = 0
    for position in range(len(valid) + 1):
        ctx.now_ms = times[max(0, position - 1)]
        while step < len(plan) and slots[step] == position:
            built = _KINDS[plan[step]][1](ctx)
            records += built if isinstance(built, list) else [built]
            step += 1
        if position < len(valid):
            key, value = valid.keys[position], valid.values[position]
            records.append(Record("valid", key, value, APPLIED))
            ctx.latest[key.decode()] = (key, value)
    ctx.later += [(4, _first_own_event(user)) for user in NASTY_IDS]
    for phase in (2, 3, 4):
        for _, build in (item for item in ctx.later if item[0] == phase):
            records += [replace(r, phase=phase) for r in build(ctx)]
    return Mix(records)
