"""One frozen settings object, built once at start-up from ``USERPULSE_*``
environment variables. Nothing else in userpulse reads the environment.

Each setting is declared once, as a field of :class:`Settings` (the worker) or
:class:`StackSettings` (the local stack) made by
:func:`~agents.envvars.setting`: its variable, type, default, meaning and
check. The constructor defaults, ``from_env`` with its messages, ``to_env``,
:data:`REFERENCE` (what ``userpulse settings`` prints) are derived from those
declarations, and a unit test holds the README's settings table to them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from agents.envvars import (
    Parse,
    Secret,
    declarations,
    env_text,
    read_fields,
    redact_url,
    setting,
)
from streams.errors import ConfigError
from streams.policy import DEFAULT_POLICY, Policy
from streams.policy_file import parse_policy

T = TypeVar("T")


# ---- checks --------------------------------------------------------------------
def _text(name: str, raw: str) -> str:
    return raw


def _nonempty(fix: str) -> Parse[str]:
    def parse(name: str, raw: str) -> str:
        if not raw:
            raise ConfigError(name, "is empty", fix)
        return raw

    return parse


def _whole(low: int, high: int) -> Parse[int]:
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


def _one_of(
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


def _optional(parse: Parse[T]) -> Parse[T | None]:
    """``parse``, except that an empty variable means None."""

    def optional(name: str, raw: str) -> T | None:
        return parse(name, raw) if raw else None

    return optional


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _home_path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _bootstrap(name: str, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                name,
                f"{server!r} is not host:port",
                "set it like 127.0.0.1:9092 or broker1:9092,broker2:9092",
            )
    return raw


def _redis_url(name: str, raw: str) -> Secret:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            name,
            f"{redact_url(raw)!r} is not a redis://, rediss:// or unix:// URL",
            "set it like redis://127.0.0.1:6379/0",
        )
    return Secret(raw)


_DAY = 86400
_PORT = _whole(1, 65535)


# ---- the worker ----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a userpulse process is configured with; each field is the one
    declaration of its ``USERPULSE_*`` variable."""

    kafka_bootstrap: str = setting(
        "USERPULSE_KAFKA_BOOTSTRAP",
        "127.0.0.1:9092",
        "Kafka bootstrap servers, host:port[,host:port]",
        _bootstrap,
    )
    redis_url: Secret = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis URL for the profile projection (a password in it is kept secret)",
        _redis_url,
    )
    topic_prefix: str = setting(
        "USERPULSE_TOPIC_PREFIX",
        "",
        "prefix for every topic name (isolates environments and test runs)",
        _text,
    )
    app_id: str = setting(
        "USERPULSE_APP_ID",
        "userpulse",
        "Faust app id = Kafka consumer group; also prefixes changelog topics",
        _nonempty("set a name, e.g. userpulse"),
    )
    store: str = setting(
        "USERPULSE_STORE",
        "rocksdb://",
        "table store: rocksdb:// (durable local state) or memory://",
        _one_of("rocksdb://", "memory://"),
    )
    data_dir: Path = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_DATA_DIR", ".userpulse/data", "where the worker keeps its RocksDB tables", _path
    )
    web_port: int = setting(
        "USERPULSE_WEB_PORT", "6066", "port of the worker's HTTP endpoint (Faust web)", _PORT
    )
    partitions: int = setting(
        "USERPULSE_PARTITIONS",
        "8",
        "partitions of user-events and the tables (the unit of scaling)",
        _whole(1, 10_000),
    )
    redis_key_prefix: str = setting(
        "USERPULSE_REDIS_KEY_PREFIX",
        "up:",
        "prefix for every Redis key the projection writes",
        _text,
    )
    log_level: str = setting(
        "USERPULSE_LOG_LEVEL",
        "info",
        "worker log level: debug, info, warning, error",
        _one_of("debug", "info", "warning", "error", problem="is unknown", lower=True),
    )
    max_event_bytes: int = setting(
        "USERPULSE_MAX_EVENT_BYTES",
        "65536",
        "largest accepted event record, in bytes",
        _whole(256, 16 * 1024 * 1024),
    )
    max_future_skew_s: int = setting(
        "USERPULSE_MAX_FUTURE_SKEW_S",
        "600",
        "how far in the future an event timestamp may be, in seconds",
        _whole(0, 365 * _DAY),
    )
    clock: str = setting(
        "USERPULSE_CLOCK",
        "wall",
        "timers fire on wall-clock time (wall, live) or on stream time (stream, replays)",
        _one_of(
            "wall",
            "stream",
            problem="is not a clock",
            fix="use wall (live: timers on wall-clock time) or stream (replays: on event time)",
        ),
    )
    stream_lateness_s: int | None = setting(
        "USERPULSE_STREAM_LATENESS_S",
        "",
        "stream clock: fire a deadline in-stream once stream time is this many seconds past "
        "it; empty = only on the user's next event or when the partition is idle (exact for "
        "any order across users)",
        _optional(_whole(0, 10 * 365 * _DAY)),
    )
    profile_refresh_s: int = setting(
        "USERPULSE_PROFILE_REFRESH_S",
        "86400",
        "wall clock: look at every user at least this often, so that no profile's health, R "
        "and P(alive) are older (0 = off); a new churn model refreshes all within 10 minutes",
        _whole(0, 365 * _DAY),
    )
    batch_max_events: int = setting(
        "USERPULSE_BATCH_MAX_EVENTS",
        "1000",
        "most events a worker takes in one batch (one state write per user per batch)",
        _whole(1, 100_000),
    )
    batch_wait_ms: int = setting(
        "USERPULSE_BATCH_WAIT_MS",
        "20",
        "longest a worker waits for a batch to fill, in ms (the latency batching adds)",
        _whole(1, 10_000),
    )
    session_timeout_s: int = setting(
        "USERPULSE_SESSION_TIMEOUT_S",
        "30",
        "seconds before the group gives a crashed worker's partitions to the others",
        _whole(6, 1800),
    )
    policy_file: Path | None = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_POLICY_FILE",
        "",
        "the operations policy (TOML; see deploy/policy.toml); empty = built-in defaults",
        _optional(_path),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        known = [name for name, _, _ in REFERENCE]
        unknown = sorted(k for k in env if k.startswith("USERPULSE_") and k not in known)
        if unknown:
            raise ConfigError(
                unknown[0],
                "is not a userpulse setting",
                "remove it or use one of: " + ", ".join(known),
            )
        return cls(**read_fields(cls, env))

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings (for child processes)."""
        return {spec.env: env_text(getattr(self, name)) for name, spec in declarations(Settings)}

    def load_policy(self) -> Policy:
        """The operations policy from ``USERPULSE_POLICY_FILE`` (defaults when unset)."""
        return load_policy_file(self.policy_file, key="USERPULSE_POLICY_FILE", unset="unset it")

    def topic(self, name: str) -> str:
        """The real name of contract topic ``name`` under this deployment's prefix."""
        return f"{self.topic_prefix}{name}"


def load_policy_file(path: str | Path | None, *, key: str, unset: str) -> Policy:
    """The policy in the TOML file at ``path`` (None: the built-in defaults).
    An unreadable file is a ConfigError naming ``key``; ``unset`` says how to
    fall back to the defaults."""
    if path is None:
        return DEFAULT_POLICY
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(
            key,
            f"cannot read {path} ({problem})",
            "point it at a readable TOML file (deploy/policy.toml documents every key), "
            f"or {unset} for the defaults",
        ) from None
    return parse_policy(text, source=str(path))


# ---- the local development stack (`userpulse stack up`) ------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StackSettings:
    """Settings of the local development stack (Kafka + Redis on 127.0.0.1)."""

    stack_dir: Path = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_STACK_DIR",
        ".userpulse/stack",
        "where the local stack keeps configs, data, logs and pid files",
        _path,
    )
    cache_dir: Path = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_STACK_CACHE_DIR",
        "~/.cache/userpulse",
        "where Kafka's jars are cached (shared by all checkouts)",
        _home_path,
    )
    kafka_port: int = setting(
        "USERPULSE_STACK_KAFKA_PORT", "9092", "local Kafka broker port (127.0.0.1)", _PORT
    )
    controller_port: int = setting(
        "USERPULSE_STACK_CONTROLLER_PORT", "9093", "local KRaft controller port (127.0.0.1)", _PORT
    )
    redis_port: int = setting(
        "USERPULSE_STACK_REDIS_PORT", "6379", "local Redis port (127.0.0.1)", _PORT
    )
    timeout_s: int = setting(
        "USERPULSE_STACK_TIMEOUT_S",
        "90",
        "how long `stack up` waits for Kafka and Redis to answer",
        _whole(5, 3600),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        env = os.environ if environ is None else environ
        Settings.from_env(env)  # reject unknown or malformed USERPULSE_* keys early
        stack = cls(**read_fields(cls, env))
        ports = [stack.kafka_port, stack.controller_port, stack.redis_port]
        if len(set(ports)) != len(ports):
            raise ConfigError(
                "USERPULSE_STACK_*_PORT",
                f"Kafka, controller and Redis ports must differ, got {ports}",
                "give each its own port",
            )
        return stack


#: (environment variable, default, meaning) of every setting, worker then stack —
#: derived from the declarations; ``userpulse settings`` prints it.
REFERENCE: tuple[tuple[str, str, str], ...] = tuple(
    (spec.env, spec.default, spec.doc)
    for cls in (Settings, StackSettings)
    for _, spec in declarations(cls)
)
