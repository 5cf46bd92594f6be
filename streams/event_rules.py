"""The event contract's shapes compiled for the hot path: an event type's
properties, the context and the shapes they nest (:mod:`streams.contract`),
each compiled once, at import, into

- a fast test with every field's condition inline (:attr:`Rules.passes`:
  True only when the full check would pass too), which the common event
  takes, and
- the full check (:func:`check_shape`), which finds and names the first
  problem (an :class:`~streams.errors.EventError` with its code and JSON path).

:func:`streams.events.parse_event` runs them (:data:`TYPE_RULES`,
:data:`CONTEXT_RULES`); each field kind's check is in
:mod:`streams.event_fields`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streams.contract import (
    CONTEXT,
    EVENT_TYPES,
    MAX_LOCALE_LENGTH,
    EventType,
    Field,
    Identity,
    Limits,
    Shape,
)
from streams.errors import EventError
from streams.event_fields import (
    CURRENCY_RE,
    KIND_CHECKS,
    LOCALE_RE,
    Check,
    is_timezone,
    json_path,
    quoted,
    wrong_type,
)


@dataclass(frozen=True, slots=True)
class Rules:
    """A shape (or an event type's properties) compiled for the hot path."""

    fields: tuple[tuple[str, Check, bool], ...]
    names: frozenset[str]
    closed: bool = False
    min_fields: int = 0
    identity: Identity = "either"
    #: True when ``doc`` certainly passes these rules (:func:`_compile_passes`);
    #: False sends it through :func:`check_shape`, which names the problem
    passes: Callable[[dict[str, Any], Limits], bool] = lambda doc, limits: False


def _compile(fields: tuple[Field, ...], *, closed: bool = False, min_fields: int = 0) -> Rules:
    names = frozenset(f.name for f in fields)
    return Rules(
        fields=tuple((f.name, _field_check(f), f.required) for f in fields),
        names=names,
        closed=closed,
        min_fields=min_fields,
        passes=_compile_passes(fields, names, closed, min_fields),
    )


#: the condition under which a value of each kind passes its check (``v``:
#: the value, ``limits``); each implies the check passes (the hot path's test)
_PASSES: Final[Mapping[str, str]] = {
    "id": "type(v) is str and v and len(v) <= limits.max_id_length and v.isprintable()",
    "text": "type(v) is str",
    "boolean": "type(v) is bool",
    "amount": "(type(v) is float or type(v) is int) and 0 <= v <= limits.max_amount",
    "quantity": "type(v) is int and 1 <= v <= limits.max_quantity",
    "currency": "type(v) is str and (v in _currencies or _currency(v))",
    "timezone": "type(v) is str and is_timezone(v)",
    "locale": f"type(v) is str and len(v) <= {MAX_LOCALE_LENGTH} and (v in _locales or _locale(v))",
    "ip": "False",  # rare: always through the full check
}


def _remembering(pattern: re.Pattern[str], known: set[str]) -> Callable[[str], bool]:
    """``pattern.fullmatch(v) is not None``, remembering the values that match
    (a few hundred distinct codes and tags: a set lookup instead of a match)."""

    def matches(value: str) -> bool:
        if pattern.fullmatch(value) is None:
            return False
        if len(known) < 4096:
            known.add(value)
        return True

    return matches


_CURRENCIES: Final[set[str]] = set()
_LOCALES: Final[set[str]] = set()


def _compile_passes(
    fields: tuple[Field, ...], names: frozenset[str], closed: bool, min_fields: int
) -> Callable[[dict[str, Any], Limits], bool]:
    """One function with every field's test inline (no call per field):
    True only when the full check (:func:`check_shape`) would pass too.
    A shape without required fields is tested member by member (a context
    has 2 or 3 of its 6 fields), any other field by field."""
    scope: dict[str, Any] = {
        "_currency": _remembering(CURRENCY_RE, _CURRENCIES),
        "_currencies": _CURRENCIES,
        "_locale": _remembering(LOCALE_RE, _LOCALES),
        "_locales": _LOCALES,
        "is_timezone": is_timezone,
        "_names": names,
    }
    tests: list[tuple[Field, list[str]]] = []
    for i, spec in enumerate(fields):
        if spec.kind in ("object", "list"):
            assert spec.shape is not None, spec.name
            shape = spec.shape
            scope[f"_inner{i}"] = _compile_passes(
                shape.fields,
                frozenset(f.name for f in shape.fields),
                shape.closed,
                shape.min_fields,
            )
            if spec.kind == "object":
                test = [f"if type(v) is not dict or not _inner{i}(v, limits):", "    return False"]
            else:
                test = [
                    "if type(v) is not list:",
                    "    return False",
                    "for item in v:",
                    f"    if type(item) is not dict or not _inner{i}(item, limits):",
                    "        return False",
                ]
        else:
            test = [f"if not ({_PASSES[spec.kind]}):", "    return False"]
        tests.append((spec, test))
    lines = ["def passes(doc, limits):"]
    if any(spec.required for spec in fields):
        lines.append("    get = doc.get")
        for spec, test in tests:
            lines.append(f"    v = get({spec.name!r})")
            lines.append("    if v is None:")
            lines.append("        return False" if spec.required else "        pass")
            lines.append("    else:")
            lines += [f"        {line}" for line in test]
        if closed:
            lines += ["    if not _names.issuperset(doc):", "        return False"]
    elif tests:
        lines.append("    for k, v in doc.items():")
        for n, (spec, test) in enumerate(tests):
            lines.append(f"        {'if' if n == 0 else 'elif'} k == {spec.name!r}:")
            lines.append("            if v is not None:")
            lines += [f"                {line}" for line in test]
        if closed:
            lines += ["        else:", "            return False"]
    elif closed:
        lines += ["    if doc:", "        return False"]
    if min_fields:
        lines += [f"    if len(doc) < {min_fields}:", "        return False"]
    lines.append("    return True")
    exec("\n".join(lines), scope)
    passes: Callable[[dict[str, Any], Limits], bool] = scope["passes"]
    return passes


def _field_check(spec: Field) -> Check:
    if spec.kind == "object":
        assert spec.shape is not None, spec.name
        return _object_check(_compile_shape(spec.shape))
    if spec.kind == "list":
        assert spec.shape is not None, spec.name
        return _list_check(_compile_shape(spec.shape))
    return KIND_CHECKS[spec.kind]


def _compile_shape(shape: Shape) -> Rules:
    return _compile(shape.fields, closed=shape.closed, min_fields=shape.min_fields)


def _object_check(rules: Rules) -> Check:
    def check(value: Any, parent: str, name: str, limits: Limits) -> None:
        if type(value) is not dict:
            raise wrong_type(parent, name, "an object", value)
        check_shape(value, f"{parent}.{name}", rules, limits)

    return check


def _list_check(rules: Rules) -> Check:
    def check(value: Any, parent: str, name: str, limits: Limits) -> None:
        if type(value) is not list:
            raise wrong_type(parent, name, "an array", value)
        base = f"{parent}.{name}"
        for index, item in enumerate(value):
            if type(item) is not dict:
                raise wrong_type(base, f"[{index}]", "an object", item)
            check_shape(item, f"{base}[{index}]", rules, limits)

    return check


def check_shape(doc: dict[str, Any], parent: str, rules: Rules, limits: Limits) -> None:
    get = doc.get
    for name, check, required in rules.fields:
        value = get(name)
        if value is None:
            if required:
                raise EventError("missing_field", json_path(parent, name), f"{name} is required")
            continue
        check(value, parent, name, limits)
    if rules.closed and not rules.names.issuperset(doc):
        extra = next(key for key in doc if key not in rules.names)
        raise EventError(
            "unknown_field",
            json_path(parent, extra),
            f"unknown field {quoted(extra)}; expected one of {', '.join(sorted(rules.names))}",
        )
    if len(doc) < rules.min_fields:
        raise EventError(
            "missing_field",
            parent,
            f"{parent} must have at least {rules.min_fields} of: {', '.join(sorted(rules.names))}",
        )


def _type_rules(spec: EventType) -> Rules:
    rules = _compile(spec.properties)
    return Rules(rules.fields, rules.names, identity=spec.identity, passes=rules.passes)


TYPE_RULES: Final[Mapping[str, Rules]] = {
    name: _type_rules(spec) for name, spec in EVENT_TYPES.items()
}
CONTEXT_RULES: Final = _compile_shape(CONTEXT)
