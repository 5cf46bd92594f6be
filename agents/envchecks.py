"""The checks of :mod:`agents.settings`: each turns a ``USERPULSE_*``
variable's text into its value, or raises a ConfigError naming the variable,
what is wrong and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from agents.envvars import PREFIX, Parse, Secret, redact_url
from streams.errors import ConfigError

T = TypeVar("T")

_KAFKA_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def text(name: str, raw: str) -> str:
    return raw


def whole(low: int, high: int) -> Parse[int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                name, f"{raw!r} is not a whole number", f"set a number from {low} to {high}"
            ) from None
        if not low <= value <= high:
            raise ConfigError(
                name, f"{value} is out of range", f"set a number from {low} to {high}"
            )
        return value

    return parse


def one_of(
    *choices: str, problem: str = "is not supported", fix: str = "", lower: bool = False
) -> Parse[str]:
    def parse(name: str, raw: str) -> str:
        value = raw.lower() if lower else raw
        if value not in choices:
            raise ConfigError(
                name, f"{value!r} {problem}", fix or "use one of " + ", ".join(choices)
            )
        return value

    return parse


def optional(parse: Parse[T]) -> Parse[T | None]:
    """``parse``, except that an empty variable means None."""

    def optional(name: str, raw: str) -> T | None:
        return parse(name, raw) if raw else None

    return optional


def kafka_name(what: str, *, empty: bool) -> Parse[str]:
    """A name Kafka accepts in topic names (letters, digits, ``.``, ``_``,
    ``-``), apart from :data:`PREFIX` where the setting is derived."""

    def parse(name: str, raw: str) -> str:
        bare = raw.replace(PREFIX, "")
        if not raw and not empty:
            raise ConfigError(name, "is empty", f"set {what}, or unset it to derive it")
        bad = sorted(set(bare) - _KAFKA_CHARS)
        if bad or len(raw) > 200:
            problem = f"{raw!r} has {''.join(bad)!r}" if bad else f"{raw!r} is too long"
            raise ConfigError(
                name, problem, f"use at most 200 letters, digits, '.', '_' or '-' for {what}"
            )
        return raw

    return parse


def path(name: str, raw: str) -> Path:
    return Path(raw)


def home_path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def bootstrap(name: str, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                name,
                f"{server!r} is not host:port",
                "set it like 127.0.0.1:9092 or broker1:9092,broker2:9092",
            )
    return raw


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")


def host(name: str, raw: str) -> str:
    """An address to listen on: an IPv4 or IPv6 address or a host name."""
    value = raw.strip()
    if not value or not set(value) <= _HOST_CHARS:
        raise ConfigError(
            name,
            f"{raw!r} is not an address",
            "set it like 0.0.0.0 (every interface), 127.0.0.1 (this host only) or ::",
        )
    return value


def redis_url(name: str, raw: str) -> Secret:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            name,
            f"{redact_url(raw)!r} is not a redis://, rediss:// or unix:// URL",
            "set it like redis://127.0.0.1:6379/0",
        )
    return Secret(raw)


DAY = 86400
PORT = whole(1, 65535)
