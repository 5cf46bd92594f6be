"""The check of each kind of field the event contract declares (``id``,
``text``, ``amount``, ``quantity``, ``currency``, ``timezone``, ``locale``,
``ip``, ``boolean``: :data:`KIND_CHECKS`), and the words every rejection is
put in — the JSON path of the field, the kind of value found, the value cut
short — which :mod:`streams.events` and :mod:`streams.event_rules` share.
Each check raises an :class:`~streams.errors.EventError` with its code.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

from streams.contract import (
    CURRENCY_PATTERN,
    LOCALE_PATTERN,
    MAX_LOCALE_LENGTH,
    MAX_TIMEZONE_LENGTH,
    TIMEZONE_PATTERN,
    Limits,
)
from streams.errors import EventError

_CONTROL_RE: Final = re.compile(r"[\u0000-\u001f\u007f-\u009f]")
CURRENCY_RE: Final = re.compile(CURRENCY_PATTERN)
LOCALE_RE: Final = re.compile(LOCALE_PATTERN)
_TIMEZONE_RE: Final = re.compile(TIMEZONE_PATTERN)

Check = Callable[[Any, str, str, Limits], None]
"""Validate ``value``, found at ``parent``.``name``; raise :class:`EventError`."""


def check_id(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)
    if not value:
        raise EventError("empty_id", json_path(parent, name), f"{name} must not be empty")
    if len(value) > limits.max_id_length:
        raise EventError(
            "id_too_long",
            json_path(parent, name),
            f"{name} is {len(value)} characters; the limit is {limits.max_id_length}",
        )
    if not value.isprintable() and _CONTROL_RE.search(value) is not None:
        raise EventError(
            "control_character",
            json_path(parent, name),
            f"{name} contains control characters (U+0000–U+001F, U+007F–U+009F): {quoted(value)}",
        )


def _check_text(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)


def _check_boolean(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not bool:
        raise wrong_type(parent, name, "true or false", value)


def _check_amount(value: Any, parent: str, name: str, limits: Limits) -> None:
    kind = type(value)
    if kind is not float and kind is not int:
        raise wrong_type(parent, name, "a number", value)
    if not 0 <= value <= limits.max_amount:
        if value < 0:
            problem = "must not be negative"
        elif value > limits.max_amount:
            problem = f"is larger than {limits.max_amount:,.0f}, the most accepted"
        else:
            problem = "must be a finite number"
        raise EventError("bad_amount", json_path(parent, name), f"{name} {value!r} {problem}")


def _check_quantity(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not int:
        expected = "an integer without a decimal point or exponent"
        raise wrong_type(parent, name, expected, value)
    if not 1 <= value <= limits.max_quantity:
        raise EventError(
            "bad_quantity",
            json_path(parent, name),
            f"{name} is {value}; it must be between 1 and {limits.max_quantity}",
        )


def _check_currency(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)
    if CURRENCY_RE.fullmatch(value) is None:
        hint = f"; did you mean {value.upper()!r}?" if CURRENCY_RE.fullmatch(value.upper()) else ""
        raise EventError(
            "bad_currency",
            json_path(parent, name),
            f"{name} {quoted(value)} is not an ISO 4217 code (three upper-case letters such "
            f"as EUR or USD){hint}",
        )


def _check_timezone(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)
    if not is_timezone(value):
        raise EventError(
            "bad_timezone",
            json_path(parent, name),
            f"{name} {quoted(value)} is not an IANA time-zone name such as Europe/Paris or "
            "America/New_York (an offset such as +02:00 is not a zone name)",
        )


@lru_cache(maxsize=1024)
def is_timezone(name: str) -> bool:
    if len(name) > MAX_TIMEZONE_LENGTH or _TIMEZONE_RE.fullmatch(name) is None:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, LookupError, OSError):
        return False
    return True


def _check_locale(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)
    if len(value) > MAX_LOCALE_LENGTH or LOCALE_RE.fullmatch(value) is None:
        raise EventError(
            "bad_format",
            json_path(parent, name),
            f"{name} {quoted(value)} is not a BCP 47 language tag such as en, en-US or zh-Hans-CN",
        )


def _check_ip(value: Any, parent: str, name: str, limits: Limits) -> None:
    if type(value) is not str:
        raise wrong_type(parent, name, "a string", value)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise EventError(
            "bad_format",
            json_path(parent, name),
            f"{name} {quoted(value)} is not an IPv4 or IPv6 address",
        ) from None


KIND_CHECKS: Final[Mapping[str, Check]] = {
    "id": check_id,
    "text": _check_text,
    "amount": _check_amount,
    "quantity": _check_quantity,
    "currency": _check_currency,
    "timezone": _check_timezone,
    "locale": _check_locale,
    "ip": _check_ip,
    "boolean": _check_boolean,
}


# -- messages ---------------------------------------------------------------

_SIMPLE_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PATH_NAME: Final = 64


def json_path(parent: str, name: str) -> str:
    """The JSON path of member ``name`` of ``parent`` (``[i]`` for an index);
    an absurdly long member name is cut short, like every echoed value."""
    if name.startswith("["):
        return f"{parent}{name}"
    if _SIMPLE_NAME_RE.fullmatch(name) and len(name) <= _MAX_PATH_NAME:
        return f"{parent}.{name}"
    if len(name) > _MAX_PATH_NAME:
        name = name[: _MAX_PATH_NAME - 1] + "…"
    return f"{parent}[{json.dumps(name, ensure_ascii=False)}]"


def wrong_type(parent: str, name: str, expected: str, value: Any) -> EventError:
    got = kind_of(value)
    if type(value) is bool or value is None:
        shown = f" ({'null' if value is None else str(value).lower()})"
    elif isinstance(value, (int, float, str)):
        shown = f" ({quoted(value)})"
    else:
        shown = ""
    label = name.lstrip("[").rstrip("]") if name.startswith("[") else name
    subject = f"element {label}" if name.startswith("[") else name
    return EventError(
        "wrong_type", json_path(parent, name), f"{subject} must be {expected}, got {got}{shown}"
    )


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number" if value.is_integer() else "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def quoted(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
