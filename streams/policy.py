"""The operations policy: every threshold the lifecycle rules use, as plain data.

Growth teams change these in one TOML file (``USERPULSE_POLICY_FILE``;
``deploy/policy.toml`` documents every key with its default, docs/policy.md
explains them). This module stays pure: the worker reads the file and hands
its text to :func:`parse_policy`, which validates it and names the key, the
problem and the allowed values on any mistake (a :class:`ConfigError`).
:func:`policy_to_toml` renders a policy as that documented file;
``deploy/policy.toml`` is ``policy_to_toml(DEFAULT_POLICY)``.
"""

from __future__ import annotations

import difflib
import math
import re
import textwrap
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from datetime import time as time_of_day
from itertools import pairwise
from typing import Any, Final

from streams.errors import ConfigError
from streams.events import MAX_TYPE_LENGTH, TYPE_PATTERN

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class StagePolicy:
    """The AARRR journey: acquired → activated → retained → monetized →
    repeat_buyer → referrer. A user's stage is the furthest one reached."""

    #: event types that count as the key action for activation
    activation_events: tuple[str, ...] = ("product_added", "order_completed")
    #: the key action must happen within this many days of sign-up (or first seen)
    activation_window_days: int = 7
    #: retained = active again at least this many days after activation
    retention_period_days: int = 7
    #: orders that make a repeat buyer
    repeat_buyer_orders: int = 2


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Amplitude-style health: new, active, at_risk, dormant, resurrected."""

    #: new while first seen less than this many days ago
    new_days: int = 7
    #: active while last seen less than this many days ago
    active_days: int = 14
    #: at_risk until this many days without activity; dormant after
    dormant_days: int = 30
    #: a dormant user who returns is resurrected for this many days
    resurrected_days: int = 14


@dataclass(frozen=True, slots=True)
class RfmPolicy:
    """RFM scores 1–5 from ascending thresholds, and the eight classic segments.

    Recency scores 5 for the most recent; frequency and monetary score 5 for
    the highest. A score at or above ``high_score`` counts as "high" for the
    segment (important/general × value/development/retention/win-back).
    """

    #: days since the last order: ≤ 1st → R5, ≤ 2nd → R4, … ; beyond the last → R1
    recency_days: tuple[int, ...] = (7, 30, 90, 180)
    #: order counts: ≥ 4th → F5, ≥ 3rd → F4, … ; below the 1st → F1
    frequency_orders: tuple[int, ...] = (2, 3, 5, 10)
    #: net revenue (revenue − refunds): ≥ 4th → M5, … ; below the 1st → M1
    monetary: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0)
    #: a score at or above this is "high" when choosing the segment
    high_score: int = 3


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """Value tier by lifetime value (net revenue): high, mid, low."""

    #: lifetime value at or above this is the high tier
    high_ltv: float = 1000.0
    #: lifetime value at or above this (and below high_ltv) is the mid tier; below is low
    mid_ltv: float = 200.0


@dataclass(frozen=True, slots=True)
class CartPolicy:
    """Cart-abandonment reminders (triggers.cart-abandonment)."""

    #: reminders at these seconds after the last cart change, one per step; [] disables
    reminder_delays_s: tuple[int, ...] = (3600, 86400, 259200)
    #: carts worth less than this get no reminder
    min_value: float = 0.0


@dataclass(frozen=True, slots=True)
class ActivationPolicy:
    """Activation-stalled nudges (triggers.activation-stalled)."""

    #: signed up but not activated: a trigger at each of these seconds after sign-up; [] disables
    stalled_after_s: tuple[int, ...] = (86400, 259200)


@dataclass(frozen=True, slots=True)
class ChurnPolicy:
    """Churn warnings and win-back (triggers.churn-warning)."""

    #: warn once after this many seconds without activity (fixed rule); 0 disables
    inactivity_s: int = 30 * 86400
    #: warn once when the BG/NBD probability of being alive falls below this; 0 disables
    p_alive_threshold: float = 0.3


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """When a marketing trigger (cart, activation-stalled, churn, win-back) may go out."""

    #: the channel marketing triggers are meant for (caps and consent are checked for it)
    channel: str = "email"
    #: at most this many marketing triggers per user per UTC day; 0 = no cap (later ones wait)
    daily_cap: int = 3
    #: quiet hours in the user's local time, [start hour, end hour); [] disables
    quiet_hours: tuple[int, ...] = (22, 8)
    #: time zone of users whose events carry no context.timezone
    default_timezone: str = "UTC"
    #: without consent for the channel: "flag" (sent, marked not deliverable) or "suppress"
    consent: str = "flag"


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole operations policy: one section per rule family."""

    stages: StagePolicy = field(default_factory=StagePolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    rfm: RfmPolicy = field(default_factory=RfmPolicy)
    tiers: TierPolicy = field(default_factory=TierPolicy)
    cart: CartPolicy = field(default_factory=CartPolicy)
    activation: ActivationPolicy = field(default_factory=ActivationPolicy)
    churn: ChurnPolicy = field(default_factory=ChurnPolicy)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)


DEFAULT_POLICY = Policy()


# ---- values the hot paths compute from a policy, once per policy ---------------
@dataclass(frozen=True, slots=True)
class Precomputed:
    """A policy's thresholds in the units the per-event rules compare them
    in (milliseconds, sets), computed once per policy by :func:`precomputed`:
    the same arithmetic the rules did per call, done once."""

    policy: Policy
    #: health.*_days × DAY_MS
    new_ms: int
    active_ms: int
    dormant_ms: int
    resurrected_ms: int
    #: rfm.recency_days × DAY_MS (the recency score changes 1 ms after each)
    recency_ms: tuple[int, ...]
    #: stages.activation_events as a set; the windows × DAY_MS
    activation_events: frozenset[str]
    activation_window_ms: int
    retention_ms: int
    #: cart.reminder_delays_s × 1000, and their count
    cart_delays_ms: tuple[int, ...]
    cart_steps: int
    #: activation.stalled_after_s × 1000, and their count
    stalled_ms: tuple[int, ...]
    stalled_steps: int
    #: churn.inactivity_s × 1000 (0: the fixed rule is off)
    inactivity_ms: int
    #: delivery.quiet_hours as (start, end), or None when there are none
    quiet: tuple[int, int] | None


_PRECOMPUTED: dict[int, Precomputed] = {}


def precomputed(policy: Policy) -> Precomputed:
    """``policy``'s :class:`Precomputed` values (cached per policy object)."""
    hit = _PRECOMPUTED.get(id(policy))
    if hit is not None and hit.policy is policy:
        return hit
    if len(_PRECOMPUTED) >= 256:  # policies built in a loop (tests): keep it small
        _PRECOMPUTED.clear()
    health, cart, stalled = policy.health, policy.cart, policy.activation.stalled_after_s
    quiet = policy.delivery.quiet_hours
    made = Precomputed(
        policy=policy,
        new_ms=health.new_days * DAY_MS,
        active_ms=health.active_days * DAY_MS,
        dormant_ms=health.dormant_days * DAY_MS,
        resurrected_ms=health.resurrected_days * DAY_MS,
        recency_ms=tuple(d * DAY_MS for d in policy.rfm.recency_days),
        activation_events=frozenset(policy.stages.activation_events),
        activation_window_ms=policy.stages.activation_window_days * DAY_MS,
        retention_ms=policy.stages.retention_period_days * DAY_MS,
        cart_delays_ms=tuple(d * 1000 for d in cart.reminder_delays_s),
        cart_steps=len(cart.reminder_delays_s),
        stalled_ms=tuple(s * 1000 for s in stalled),
        stalled_steps=len(stalled),
        inactivity_ms=policy.churn.inactivity_s * 1000,
        quiet=(quiet[0], quiet[1]) if len(quiet) == 2 and quiet[0] != quiet[1] else None,
    )
    _PRECOMPUTED[id(policy)] = made
    return made


# ---- what each key means and allows ------------------------------------------
MAX_DAYS: Final = 3650
"""The longest day count any policy key accepts (ten years)."""
THRESHOLD_COUNT: Final = 4
"""RFM thresholds per dimension: four cut points make the scores 1–5."""

#: "section.key" → what the key means (the ``#:`` comment above its field).
FIELD_DOCS: Final[Mapping[str, str]] = {
    "stages.activation_events": "event types that count as the key action for activation",
    "stages.activation_window_days": (
        "the key action must happen within this many days of sign-up (or first seen)"
    ),
    "stages.retention_period_days": (
        "retained = active again at least this many days after activation"
    ),
    "stages.repeat_buyer_orders": "orders that make a repeat buyer",
    "health.new_days": "new while first seen less than this many days ago",
    "health.active_days": "active while last seen less than this many days ago",
    "health.dormant_days": "at_risk until this many days without activity; dormant after",
    "health.resurrected_days": "a dormant user who returns is resurrected for this many days",
    "rfm.recency_days": (
        "days since the last order: ≤ 1st → R5, ≤ 2nd → R4, … ; beyond the last → R1"
    ),
    "rfm.frequency_orders": "order counts: ≥ 4th → F5, ≥ 3rd → F4, … ; below the 1st → F1",
    "rfm.monetary": "net revenue (revenue − refunds): ≥ 4th → M5, … ; below the 1st → M1",
    "rfm.high_score": 'a score at or above this is "high" when choosing the segment',
    "tiers.high_ltv": "lifetime value at or above this is the high tier",
    "tiers.mid_ltv": (
        "lifetime value at or above this (and below high_ltv) is the mid tier; below is low"
    ),
    "cart.reminder_delays_s": (
        "reminders at these seconds after the last cart change, one per step; [] disables"
    ),
    "cart.min_value": "carts worth less than this get no reminder",
    "activation.stalled_after_s": (
        "signed up but not activated: a trigger at each of these seconds after sign-up; [] disables"
    ),
    "churn.inactivity_s": (
        "warn once after this many seconds without activity (fixed rule); 0 disables"
    ),
    "churn.p_alive_threshold": (
        "warn once when the BG/NBD probability of being alive falls below this; 0 disables"
    ),
    "delivery.channel": (
        "the channel marketing triggers are meant for (caps and consent are checked for it)"
    ),
    "delivery.daily_cap": (
        "at most this many marketing triggers per user per UTC day; 0 = no cap (later ones wait)"
    ),
    "delivery.quiet_hours": (
        "quiet hours in the user's local time, [start hour, end hour); [] disables"
    ),
    "delivery.default_timezone": "time zone of users whose events carry no context.timezone",
    "delivery.consent": (
        'without consent for the channel: "flag" (sent, marked not deliverable) or "suppress"'
    ),
}

_DAYS = f"a whole number of days from 1 to {MAX_DAYS}"
_SECONDS_LIST = (
    f"a list of strictly ascending whole numbers of seconds, 1 to {MAX_DAYS * 86400}; [] disables"
)

#: "section.key" → the values it accepts (also the fix of a rejected value).
FIELD_ALLOWED: Final[Mapping[str, str]] = {
    "stages.activation_events": (
        "a non-empty list of distinct event types, each snake_case (lower-case words "
        f"joined by _) and at most {MAX_TYPE_LENGTH} characters"
    ),
    "stages.activation_window_days": _DAYS,
    "stages.retention_period_days": _DAYS,
    "stages.repeat_buyer_orders": "a whole number, 2 or more",
    "health.new_days": f"{_DAYS}, at most active_days",
    "health.active_days": f"{_DAYS}, at least new_days and less than dormant_days",
    "health.dormant_days": f"{_DAYS}, more than active_days",
    "health.resurrected_days": _DAYS,
    "rfm.recency_days": (
        f"{THRESHOLD_COUNT} strictly ascending whole numbers of days, 1 to {MAX_DAYS}"
    ),
    "rfm.frequency_orders": f"{THRESHOLD_COUNT} strictly ascending whole numbers, 1 or more",
    "rfm.monetary": f"{THRESHOLD_COUNT} strictly ascending numbers, each more than 0",
    "rfm.high_score": "a whole number from 1 to 5",
    "tiers.high_ltv": "a number more than mid_ltv",
    "tiers.mid_ltv": "a number, 0 or more, less than high_ltv",
    "cart.reminder_delays_s": _SECONDS_LIST,
    "cart.min_value": "a number, 0 or more",
    "activation.stalled_after_s": _SECONDS_LIST,
    "churn.inactivity_s": f"a whole number of seconds from 0 to {MAX_DAYS * 86400}",
    "churn.p_alive_threshold": "a number from 0 to 1",
    "delivery.channel": "one of email, sms, push, in_app",
    "delivery.daily_cap": "a whole number, 0 or more",
    "delivery.quiet_hours": "[] or two whole hours from 0 to 23, e.g. [22, 8]",
    "delivery.default_timezone": 'an IANA time-zone name, e.g. "UTC" or "Europe/Paris"',
    "delivery.consent": '"flag" or "suppress"',
}

#: section name → its defaults
_SECTIONS: Final[Mapping[str, Any]] = {
    f.name: getattr(DEFAULT_POLICY, f.name) for f in fields(Policy)
}


# ---- parsing -----------------------------------------------------------------
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
        if section not in _SECTIONS:
            raise _unknown_section(section, table, source)
        if not isinstance(table, dict):
            raise ConfigError(
                section,
                f"must be a table, got {_got(table)} (in {source})",
                f"write it as a section: [{section}] on its own line, its keys below",
            )
        defaults = _SECTIONS[section]
        values: dict[str, Any] = {}
        for name, raw in table.items():
            path = f"{section}.{name}"
            if path not in _CHECKS:
                raise _unknown_key(section, name, source)
            try:
                values[name] = _CHECKS[path](raw)
            except _Invalid as bad:
                example = f"{name} = {_render(getattr(defaults, name))}"
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
            raise _Invalid(f"must be a finite number, got {_render(number)}")
        if number < low:
            raise _Invalid(f"{_render(value)} is below the minimum {_render(low)}")
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
            hint = f"; did you mean {_render(guess)}?" if _is_event_type(guess) else ""
            raise _Invalid(
                f"item {position}, {_render(item)}, is not a snake_case event type{hint}"
            )
        if item in value[: position - 1]:
            raise _Invalid(f"item {position}, {_render(item)}, is listed twice")
    return tuple(value)


def _thresholds(item_check: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"must be a list of {THRESHOLD_COUNT} thresholds, got {_got(value)}")
        if len(value) != THRESHOLD_COUNT:
            raise _Invalid(
                f"has {len(value)} thresholds, {_render(value)}; "
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
                raise _Invalid(
                    f"is not strictly ascending: item {position}, {_render(value[position - 1])}, "
                    f"does not exceed item {position - 1}, {_render(value[position - 2])}"
                )
        return tuple(items)

    return check


_non_negative = _number(0)
_any_number = _number(-math.inf)


def _positive(value: Any) -> float:
    number = _any_number(value)
    if number <= 0:
        raise _Invalid(f"{_render(value)} is not more than 0")
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
        raise _Invalid(f"{_render(value)} is above the maximum 1")
    return number


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if type(value) is not str or value not in allowed:
        raise _Invalid(f"{_render(value)} is not one of {', '.join(allowed)}")
    return value


def _quiet_hours(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in (0, 2):
        raise _Invalid(f"must be [] or [start hour, end hour], got {_render(value)}")
    hour = _whole(0, 23)
    return tuple(hour(v) for v in value)


def _timezone(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"must be a string, got {_got(value)}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"{_render(value)} is not an IANA time-zone name") from None
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
    shown = f"{other_name} = {_render(other_value)}"
    if other not in given:
        shown = f"the default {shown}"
    raise ConfigError(
        blamed,
        f"{name} = {_render(blamed_value)} {must} {shown} (in {source})",
        f"set {name} {word} {other_name} ({_render(other_value)}), or change {other_name} too",
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
    names = ", ".join(f"[{name}]" for name in _SECTIONS)
    homes = [path.partition(".")[0] for path in _CHECKS if path.partition(".")[2] == section]
    close = difflib.get_close_matches(section, list(_SECTIONS), n=1)
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


# ---- rendering -----------------------------------------------------------------
def policy_to_toml(policy: Policy) -> str:
    """``policy`` as a TOML file that documents every key: its meaning, the
    allowed values and the default. ``parse_policy`` reads it back unchanged."""
    lines = [
        "# userpulse operations policy: every threshold the lifecycle rules use.",
        "#",
        *_comment(
            "The worker reads the file named by USERPULSE_POLICY_FILE once, at start-up, "
            "and refuses to start when a section or key is unknown or a value is wrong. "
            "Every key is optional: a missing key, or section, keeps its default. "
            "docs/policy.md explains each rule."
        ),
        "#",
        *_comment(
            "Generated by streams.policy.policy_to_toml. deploy/policy.toml is "
            "policy_to_toml(DEFAULT_POLICY): copy it and change what you need."
        ),
    ]
    for section, defaults in _SECTIONS.items():
        current = getattr(policy, section)
        doc = " ".join((type(current).__doc__ or "").replace("``", "").split())
        lines += ["", f"[{section}]", *_comment(doc)]
        for spec in fields(current):
            path = f"{section}.{spec.name}"
            default = _render(getattr(defaults, spec.name))
            lines += [
                "",
                *_comment(f"{FIELD_DOCS[path]}."),
                *_comment(f"Allowed: {FIELD_ALLOWED[path]}."),
                f"# Default: {default}",
                f"{spec.name} = {_render(getattr(current, spec.name))}",
            ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, width=86, break_on_hyphens=False)]


def _render(value: Any) -> str:
    """``value`` in TOML syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return '"' + "".join(_escape(char) for char in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, dict):
        pairs = (f"{_render_key(key)} = {_render(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return repr(value)


def _render_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _render(key)


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char < " " or char == "\x7f":
        return f"\\u{ord(char):04x}"
    return char


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
    shown = _render(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"the {kind} {shown}"
