"""The stored layout of a user's state: a compact positional orjson array
led by the schema version (:func:`encode_state` / :func:`decode_state`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streams.errors import StateError
from streams.userstate import (
    FIELD_NAMES,
    SCHEMA_VERSION,
    STAGE_ERASED,
    Cart,
    CartItem,
    UserState,
    compile_per_field,
)

_SCALARS = (
    "user_id", "first_seen_ms", "last_seen_ms", "event_count", "signup_ms", "activation_ms",
    "retained_ms", "first_order_ms", "last_order_ms", "order_count", "revenue", "refunds",
    "sessions", "activity_day", "activity_bits", "channel", "campaign", "referrer_id",
    "referral_count", "stage", "health", "resurrected_ms", "segment", "tier", "merged_into",
    "revision", "timezone", "stalled_sent", "churn_warned_ms", "sent_day", "sent_count",
    "evaluated_ms", "events_offset", "derived_offset", "erased_ms", "erasures",
)  # fmt: skip
_TUPLES = ("recent_referrals", "recent_events", "merged_from")
#: the scalars of each layout read: version 5 had no ``erasures`` (read as 1
#: for a marker or a history begun after an erasure, else 0: the ids such a
#: history's triggers had stay the same); version 4 no ``erased_ms`` either
#: (read as 0: a history never erased — an erasure marker of version 4 still
#: holds the erasure time as its ``last_seen_ms``); version 3 no input
#: offsets either (read as -1, none applied: the first redelivery after the
#: upgrade is recognised by the window of recent event ids, as before)
_SCALARS_OF = {
    SCHEMA_VERSION: _SCALARS,
    5: _SCALARS[:-1],
    4: _SCALARS[:-2],
    3: _SCALARS[:-4],
}


def encode_state(state: UserState) -> bytes:
    """A positional array: [version, scalars…, tuples…, consent, triggers, rfm, cart]."""
    return _encode(state, orjson.dumps)


def _cart_doc(cart: Cart | None) -> list[Any] | None:
    if cart is None:
        return None
    items = [[i.product_id, i.quantity, i.price] for i in cart.items]
    return [cart.cart_id, items, cart.last_change_ms, cart.checkout_ms, cart.reminders_sent]


#: the array of :func:`encode_state`, built in one expression
_encode: Callable[[UserState, Callable[[Any], bytes]], bytes] = compile_per_field(
    "encode",
    [
        "def encode(s, dumps):",
        "    return dumps([",
        f"        {SCHEMA_VERSION},",
        *[f"        s.{n}," for n in (*_SCALARS, *_TUPLES, "consent", "last_triggers", "rfm")],
        "        _cart_doc(s.cart),",
        "    ])",
    ],
    _cart_doc=_cart_doc,
)
_LENGTH = 1 + len(_SCALARS) + len(_TUPLES) + 4


def decode_state(raw: bytes) -> UserState:
    """The state :func:`encode_state` encoded (a :class:`StateError` when ``raw`` is not one)."""
    try:
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
    if type(doc) is list and len(doc) == _LENGTH and doc[0] == SCHEMA_VERSION:
        try:
            return _decode(doc)
        except (TypeError, ValueError, IndexError):
            pass  # named below
    return _decode_checked(doc)


def _decode_cart(cart: list[Any] | None) -> Cart | None:
    if cart is None:
        return None
    cart_id, items, last_change, checkout, reminders = cart
    return Cart(
        cart_id, tuple(CartItem(p, q, pr) for p, q, pr in items), last_change, checkout, reminders
    )


#: a well-formed array of :func:`encode_state` → the state, built in one go
_decode: Callable[[list[Any]], UserState] = compile_per_field(
    "decode",
    [
        "def decode(doc):",
        "    new = _new(UserState)",
        *[f"    _s_{n}(new, doc[{i}])" for i, n in enumerate(_SCALARS, start=1)],
        *[
            f"    _s_{n}(new, tuple(doc[{i}]))"
            for i, n in enumerate(_TUPLES, start=1 + len(_SCALARS))
        ],
        f"    consent = doc[{1 + len(_SCALARS) + 3}]",
        "    _s_consent(new, () if consent == [] else tuple((c, bool(g)) for c, g in consent))",
        f"    stamps = doc[{1 + len(_SCALARS) + 4}]",
        "    _s_last_triggers(",
        "        new, () if stamps == [] else tuple((t, int(at)) for t, at in stamps)",
        "    )",
        f"    rfm = doc[{1 + len(_SCALARS) + 5}]",
        "    _s_rfm(new, tuple(rfm) if rfm is not None else None)",
        f"    _s_cart(new, _decode_cart(doc[{1 + len(_SCALARS) + 6}]))",
        f"    _s_schema_version(new, {SCHEMA_VERSION})",
        "    return new",
    ],
    _decode_cart=_decode_cart,
    UserState=UserState,
)
if set(_SCALARS) | set(_TUPLES) | {
    "consent",
    "last_triggers",
    "rfm",
    "cart",
    "schema_version",
} != set(FIELD_NAMES):  # pragma: no cover - a field added to UserState but not to the layout
    raise TypeError("the stored layout must hold every field of UserState")


def _decode_checked(doc: Any) -> UserState:
    """:func:`decode_state` of any document, with what is wrong with it."""
    try:
        if not isinstance(doc, list) or doc[0] not in _SCALARS_OF:
            raise StateError(f"unsupported user-state layout (expected version {SCHEMA_VERSION})")
        scalars = _SCALARS_OF[doc[0]]
        n = len(scalars)
        fields: dict[str, Any] = dict(zip(scalars, doc[1 : 1 + n], strict=True))
        rest = doc[1 + n :]
        for name, value in zip(_TUPLES, rest, strict=False):
            fields[name] = tuple(value)
        consent, triggers, rfm, cart = rest[len(_TUPLES) :]
        fields["consent"] = tuple((c, bool(g)) for c, g in consent)
        fields["last_triggers"] = tuple((t, int(at)) for t, at in triggers)
        fields["rfm"] = tuple(rfm) if rfm is not None else None
        fields["cart"] = _decode_cart(cart)
        if "erasures" not in fields:  # an older layout
            erased = fields.get("erased_ms") or fields.get("stage") == STAGE_ERASED
            fields["erasures"] = 1 if erased else 0
        return UserState(**fields)
    except StateError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise StateError(f"cannot decode user state: {exc}") from exc
