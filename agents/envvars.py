"""``USERPULSE_*`` variables: how a setting is declared once — its variable,
default (as the variable's text), meaning and check — and read back.

:func:`setting` makes a dataclass field of such a declaration;
:func:`declarations` lists them, :func:`read_fields` reads a class's fields
from an environment, :func:`origin` says where a value came from and
:func:`env_text` writes a value back as its variable's text.
:mod:`agents.settings` declares every setting with them.
A :class:`Secret` keeps a value out of ``repr`` and logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

#: In a derived setting's value, what stands for the value it is derived from
#: (the topic prefix, for the names of an environment).
PREFIX = "{prefix}"

#: A check: (variable, stripped text) -> the value, or a ConfigError naming the variable.
Parse = Callable[[str, str], T]


class Secret:
    """A string that never shows itself in ``repr`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# ---- the declaration -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnvSetting:
    """One setting's declaration: its variable, default (as the variable's
    text), meaning, and the check that turns the text into the field's value."""

    env: str
    default: str
    doc: str
    parse: Callable[[str, str], object]
    #: the variable this setting's default is derived from ("": a fixed default)
    derived_from: str = ""

    def read(self, environ: Mapping[str, str]) -> object:
        return self.parse(self.env, environ.get(self.env, self.default).strip())


_SPEC = "userpulse.setting"


def setting(env: str, default: str, doc: str, parse: Parse[T], *, derived_from: str = "") -> T:
    """A settings field declared by its variable ``env``, its ``default`` text,
    its meaning and its check; the field's default is ``parse(env, default)``,
    made afresh for each instance (``setting`` is a field specifier like
    ``dataclasses.field``, which ruff's RUF009 cannot tell). ``derived_from``
    names the variable a derived default is made from (the settings class
    derives it)."""
    spec = EnvSetting(env, default, doc, parse, derived_from)
    return field(default_factory=lambda: parse(env, default), metadata={_SPEC: spec})


def declarations(cls: type) -> Iterator[tuple[str, EnvSetting]]:
    """(field name, declaration) of every setting of the dataclass ``cls``, in order."""
    for f in fields(cls):
        yield f.name, f.metadata[_SPEC]


def read_fields(cls: type, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every setting of the dataclass ``cls``, read from ``environ`` (defaults where unset)."""
    return {name: spec.read(environ) for name, spec in declarations(cls)}


def origin(spec: EnvSetting, environ: Mapping[str, str]) -> str:
    """Where the value of ``spec``'s setting comes from in ``environ``: set by
    its variable, derived from another one, or its fixed default."""
    if spec.env in environ:
        return f"set by {spec.env}"
    if spec.derived_from:
        return f"derived from {spec.derived_from}"
    return "default"


def env_text(value: object) -> str:
    """A field's value as its variable's text (what ``from_env`` parses back)."""
    if value is None:
        return ""
    if isinstance(value, Secret):
        return value.reveal()
    return str(value)
