"""What each policy key means and allows, and the policy written as the
documented TOML file (:func:`policy_to_toml`; ``deploy/policy.toml`` is
``policy_to_toml(DEFAULT_POLICY)``). :mod:`streams.policy_file` reads that
file back, checking every value against :data:`FIELD_ALLOWED`.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping
from dataclasses import fields
from datetime import date, datetime
from datetime import time as time_of_day
from typing import Any, Final

from streams.contract import MAX_TYPE_LENGTH
from streams.policy import DEFAULT_POLICY, Policy

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
SECTIONS: Final[Mapping[str, Any]] = {
    f.name: getattr(DEFAULT_POLICY, f.name) for f in fields(Policy)
}


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
            "Generated by streams.policy_keys.policy_to_toml. deploy/policy.toml is "
            "policy_to_toml(DEFAULT_POLICY): copy it and change what you need."
        ),
    ]
    for section, defaults in SECTIONS.items():
        current = getattr(policy, section)
        doc = " ".join((type(current).__doc__ or "").replace("``", "").split())
        lines += ["", f"[{section}]", *_comment(doc)]
        for spec in fields(current):
            path = f"{section}.{spec.name}"
            default = toml_value(getattr(defaults, spec.name))
            lines += [
                "",
                *_comment(f"{FIELD_DOCS[path]}."),
                *_comment(f"Allowed: {FIELD_ALLOWED[path]}."),
                f"# Default: {default}",
                f"{spec.name} = {toml_value(getattr(current, spec.name))}",
            ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, width=86, break_on_hyphens=False)]


def toml_value(value: Any) -> str:
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
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, dict):
        pairs = (f"{_render_key(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return repr(value)


def _render_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char < " " or char == "\x7f":
        return f"\\u{ord(char):04x}"
    return char
