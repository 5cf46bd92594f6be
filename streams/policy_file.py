"""Reading the policy file: :func:`parse_policy` turns TOML text into a
:class:`~streams.policy.Policy`, or raises a :class:`ConfigError` that names
the key, the problem and the allowed values (:data:`FIELD_ALLOWED`).

Pure: the worker reads the file (``USERPULSE_POLICY_FILE``) and hands its
text over.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime
from itertools import pairwise
from typing import Any, Final

from streams.contract import MAX_TYPE_LENGTH, TYPE_PATTERN
from streams.errors import ConfigError
from streams.policy import Policy
from streams.policy_keys import FIELD_ALLOWED, MAX_DAYS, SECTIONS, THRESHOLD_COUNT, toml_value


def parse_policy(text: str, *, source: str = "policy file") -> Policy:
    """The policy written in TOML ``text``; ``source`` names it in errors.

    Missing sections and keys keep their defaults. Raises :class:`ConfigError`
    on invalid TOML (key ``(file)``), an unknown section or key, a value of
    the wrong type or out of range, or keys that contradict each other — its
    ``key`` is the dotted TOML path (``rfm.recency_days``), its ``problem``
    says what is wrong and where, its ``fix`` the allowed values.
    """
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), source) from None
    given: set[str] = set()
    sections: dict[str, Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise _unknown_section(section, table, source)
        if not isinstance(table, dict):
            raise ConfigError(
                section,
                f"must be a table, got {_got(table)} (in {source})",
                f"write it as a section: [{section}] on its own line, its keys below",
            )
        defaults = SECTIONS[section]
        values: dict[str, Any] = {}
        for name, raw in table.items():
            path = f"{section}.{name}"
            if path not in _CHECKS:
                raise _unknown_key(section, name, source)
            try:
                values[name] = _CHECKS[path](raw)
            except _Invalid as bad:
                example = f"{name} = {toml_value(getattr(defaults, name))}"
                raise ConfigError(
                    path,
                    f"{bad.problem} (in {source})",
                    f"set {FIELD_ALLOWED[path]}, e.g. {example}",
                ) from None
            given.add(path)
        sections[section] = replace(defaults, **values)
    policy = Policy(**sections)
    _check_relations(policy, given, source)
    return policy


class _Invalid(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _whole(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int:
            raise _Invalid(f"must be a whole number, got {_got(value)}")
        if value < low:
            raise _Invalid(f"{value} is below the minimum {low}")
        if high is not None and value > high:
            raise _Invalid(f"{value} is above the maximum {high}")
        return value

    return check


def _number(low: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if type(value) not in (int, float):
            raise _Invalid(f"must be a number, got {_got(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number, got {toml_value(number)}")
        if number < low:
            raise _Invalid(f"{toml_value(value)} is below the minimum {toml_value(low)}")
        return number

    return check


_EVENT_TYPE_RE: Final = re.compile(TYPE_PATTERN)


def _is_event_type(name: str) -> bool:
    return len(name) <= MAX_TYPE_LENGTH and _EVENT_TYPE_RE.fullmatch(name) is not None


def _event_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of event types, got {_got(value)}")
    if not value:
        raise _Invalid("is empty, so no user could ever be activated")
    for position, item in enumerate(value, start=1):
        if type(item) is not str:
            raise _Invalid(f"item {position} must be a string, got {_got(item)}")
        if not _is_event_type(item):
            words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", item).lower()
            guess = re.sub(r"[^a-z0-9]+", "_", words).strip("_")
            hint = f"; did you mean {toml_value(guess)}?" if _is_event_type(guess) else ""
            raise _Invalid(
                f"item {position}, {toml_value(item)}, is not a snake_case event type{hint}"
            )
        if item in value[: position - 1]:
            raise _Invalid(f"item {position}, {toml_value(item)}, is listed twice")
    return tuple(value)


def _thresholds(item_check: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"must be a list of {THRESHOLD_COUNT} thresholds, got {_got(value)}")
        if len(value) != THRESHOLD_COUNT:
            raise _Invalid(
                f"has {len(value)} thresholds, {toml_value(value)}; "
                f"the scores 1–5 need exactly {THRESHOLD_COUNT}"
            )
        items = []
        for position, item in enumerate(value, start=1):
            try:
                items.append(item_check(item))
            except _Invalid as bad:
                raise _Invalid(f"item {position}: {bad.problem}") from None
        for position, (before, after) in enumerate(pairwise(items), start=2):
            if not after > before:
                shown = toml_value(value[position - 1]), toml_value(value[position - 2])
                raise _Invalid(
                    f"is not strictly ascending: item {position}, {shown[0]}, "
                    f"does not exceed item {position - 1}, {shown[1]}"
                )
        return tuple(items)

    return check


_non_negative = _number(0)
_any_number = _number(-math.inf)


def _positive(value: Any) -> float:
    number = _any_number(value)
    if number <= 0:
        raise _Invalid(f"{toml_value(value)} is not more than 0")
    return number


_day_count = _whole(1, MAX_DAYS)

_CHECKS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "stages.activation_events": _event_types,
    "stages.activation_window_days": _day_count,
    "stages.retention_period_days": _day_count,
    "stages.repeat_buyer_orders": _whole(2),
    "health.new_days": _day_count,
    "health.active_days": _day_count,
    "health.dormant_days": _day_count,
    "health.resurrected_days": _day_count,
    "rfm.recency_days": _thresholds(_day_count),
    "rfm.frequency_orders": _thresholds(_whole(1)),
    "rfm.monetary": _thresholds(_positive),
    "rfm.high_score": _whole(1, 5),
    "tiers.high_ltv": _any_number,
    "tiers.mid_ltv": _non_negative,
    "cart.reminder_delays_s": lambda v: _seconds_list(v),
    "cart.min_value": _non_negative,
    "activation.stalled_after_s": lambda v: _seconds_list(v),
    "churn.inactivity_s": _whole(0, MAX_DAYS * 86400),
    "churn.p_alive_threshold": lambda v: _fraction(v),
    "delivery.channel": lambda v: _choice(v, ("email", "sms", "push", "in_app")),
    "delivery.daily_cap": _whole(0),
    "delivery.quiet_hours": lambda v: _quiet_hours(v),
    "delivery.default_timezone": lambda v: _timezone(v),
    "delivery.consent": lambda v: _choice(v, ("flag", "suppress")),
}


def _seconds_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of seconds, got {_got(value)}")
    check = _whole(1, MAX_DAYS * 86400)
    items = []
    for position, item in enumerate(value, start=1):
        try:
            items.append(check(item))
        except _Invalid as bad:
            raise _Invalid(f"item {position}: {bad.problem}") from None
    for position, (before, after) in enumerate(pairwise(items), start=2):
        if not after > before:
            raise _Invalid(f"is not strictly ascending at item {position}")
    return tuple(items)


def _fraction(value: Any) -> float:
    number = _non_negative(value)
    if number > 1:
        raise _Invalid(f"{toml_value(value)} is above the maximum 1")
    return number


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if type(value) is not str or value not in allowed:
        raise _Invalid(f"{toml_value(value)} is not one of {', '.join(allowed)}")
    return value


def _quiet_hours(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in (0, 2):
        raise _Invalid(f"must be [] or [start hour, end hour], got {toml_value(value)}")
    hour = _whole(0, 23)
    return tuple(hour(v) for v in value)


def _timezone(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"must be a string, got {_got(value)}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"{toml_value(value)} is not an IANA time-zone name") from None
    return value


#: a rule between two keys, read from the left key and from the right one:
#: (what the left one must be, in a word), (the same for the right one)
_Rule = tuple[tuple[str, str], tuple[str, str]]
_ABOVE: Final[_Rule] = (("must be more than", "above"), ("must be less than", "below"))
_BELOW: Final[_Rule] = (("must be less than", "below"), ("must be more than", "above"))
_AT_MOST: Final[_Rule] = (
    ("must be at most", "at or below"),
    ("must be at least", "at or above"),
)


def _check_relations(policy: Policy, given: set[str], source: str) -> None:
    """The rules between keys: tiers.high_ltv > tiers.mid_ltv and
    health.new_days ≤ health.active_days < health.dormant_days."""
    tiers, health = policy.tiers, policy.health
    if not tiers.high_ltv > tiers.mid_ltv:
        _contradiction(
            ("tiers.high_ltv", tiers.high_ltv),
            ("tiers.mid_ltv", tiers.mid_ltv),
            _ABOVE,
            given,
            source,
        )
    if not health.new_days <= health.active_days:
        _contradiction(
            ("health.new_days", health.new_days),
            ("health.active_days", health.active_days),
            _AT_MOST,
            given,
            source,
        )
    if not health.active_days < health.dormant_days:
        _contradiction(
            ("health.active_days", health.active_days),
            ("health.dormant_days", health.dormant_days),
            _BELOW,
            given,
            source,
        )


def _contradiction(
    left: tuple[str, Any], right: tuple[str, Any], rule: _Rule, given: set[str], source: str
) -> None:
    """Raise for the rule between ``left`` and ``right`` being broken, blaming
    the key the file set: the right one when the file set only that, else the
    left one."""
    if right[0] in given and left[0] not in given:
        (blamed, blamed_value), (other, other_value), (must, word) = right, left, rule[1]
    else:
        (blamed, blamed_value), (other, other_value), (must, word) = left, right, rule[0]
    name, other_name = blamed.partition(".")[2], other.partition(".")[2]
    shown = f"{other_name} = {toml_value(other_value)}"
    if other not in given:
        shown = f"the default {shown}"
    raise ConfigError(
        blamed,
        f"{name} = {toml_value(blamed_value)} {must} {shown} (in {source})",
        f"set {name} {word} {other_name} ({toml_value(other_value)}), or change {other_name} too",
    )


def _syntax_error(message: str, source: str) -> ConfigError:
    where = re.search(r"\(at line (\d+), column (\d+)\)", message)
    place = f" at line {where[1]}, column {where[2]}" if where else " near the end of the file"
    if message.startswith("Cannot "):
        # Python 3.11's tomllib reports a repeated key at the end of the document
        place = place if where else ""
        hint = "a key or [section] is written twice; keep one"
    elif message.startswith("Invalid value"):
        hint = 'a value is a number, a "quoted string", true/false or a [list, of, values]'
    else:
        hint = 'lines look like [section] or key = value; strings need "double quotes"'
    return ConfigError(
        "(file)", f"{source} is not valid TOML: {message}", f"correct the TOML{place}: {hint}"
    )


def _unknown_section(section: str, value: Any, source: str) -> ConfigError:
    names = ", ".join(f"[{name}]" for name in SECTIONS)
    homes = [path.partition(".")[0] for path in _CHECKS if path.partition(".")[2] == section]
    close = difflib.get_close_matches(section, list(SECTIONS), n=1)
    if homes:
        fix = f"{section} belongs in [{homes[0]}]; move it below that line"
    elif close:
        fix = f"did you mean [{close[0]}]? The sections are {names}"
    else:
        fix = f"remove it; the sections are {names}"
    if isinstance(value, dict):
        problem = "is not a policy section"
    else:
        problem = "is outside any section; every policy key belongs in one"
    return ConfigError(section, f"{problem} (in {source})", fix)


def _unknown_key(section: str, name: str, source: str) -> ConfigError:
    keys = [path.partition(".")[2] for path in _CHECKS if path.startswith(f"{section}.")]
    homes = [path.partition(".")[0] for path in _CHECKS if path.partition(".")[2] == name]
    close = difflib.get_close_matches(name, keys, n=1)
    if homes:
        fix = f"move it to [{homes[0]}], where {name} belongs;"
    elif close:
        fix = f"did you mean {section}.{close[0]}?"
    else:
        fix = "remove it;"
    fix += f" [{section}] takes {', '.join(keys)}"
    return ConfigError(f"{section}.{name}", f"is not a policy key (in {source})", fix)


def _got(value: Any) -> str:
    """What a TOML value is, for an error message: ``the string "7"``."""
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "whole number"
    elif isinstance(value, float):
        kind = "decimal number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, dict):
        return "a table"
    elif isinstance(value, datetime):
        kind = "date-time"
    elif isinstance(value, date):
        kind = "date"
    else:
        kind = "time"
    shown = toml_value(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"the {kind} {shown}"
