"""One frozen settings object, built once at start-up from ``USERPULSE_*``
environment variables. Nothing else in userpulse reads the environment.

Every setting, its default and meaning is listed in :data:`REFERENCE` (and in
the README's settings table, which is generated from the same list).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streams.errors import ConfigError
from streams.policy import DEFAULT_POLICY, Policy, parse_policy


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


#: (environment variable, default, meaning) — the settings reference.
REFERENCE: tuple[tuple[str, str, str], ...] = (
    (
        "USERPULSE_KAFKA_BOOTSTRAP",
        "127.0.0.1:9092",
        "Kafka bootstrap servers, host:port[,host:port]",
    ),
    (
        "USERPULSE_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis URL for the profile projection (a password in it is kept secret)",
    ),
    (
        "USERPULSE_TOPIC_PREFIX",
        "",
        "prefix for every topic name (isolates environments and test runs)",
    ),
    (
        "USERPULSE_APP_ID",
        "userpulse",
        "Faust app id = Kafka consumer group; also prefixes changelog topics",
    ),
    ("USERPULSE_STORE", "rocksdb://", "table store: rocksdb:// (durable local state) or memory://"),
    ("USERPULSE_DATA_DIR", ".userpulse/data", "where the worker keeps its RocksDB tables"),
    ("USERPULSE_WEB_PORT", "6066", "port of the worker's HTTP endpoint (Faust web)"),
    ("USERPULSE_PARTITIONS", "8", "partitions of user-events and the tables (the unit of scaling)"),
    ("USERPULSE_REDIS_KEY_PREFIX", "up:", "prefix for every Redis key the projection writes"),
    ("USERPULSE_LOG_LEVEL", "info", "worker log level: debug, info, warning, error"),
    ("USERPULSE_MAX_EVENT_BYTES", "65536", "largest accepted event record, in bytes"),
    (
        "USERPULSE_MAX_FUTURE_SKEW_S",
        "600",
        "how far in the future an event timestamp may be, in seconds",
    ),
    (
        "USERPULSE_CLOCK",
        "wall",
        "timers fire on wall-clock time (wall, live) or on stream time (stream, replays)",
    ),
    (
        "USERPULSE_STREAM_LATENESS_S",
        "",
        "stream clock: fire a deadline in-stream once stream time is this many seconds past "
        "it; empty = only on the user's next event or when the partition is idle (exact for "
        "any order across users)",
    ),
    (
        "USERPULSE_PROFILE_REFRESH_S",
        "86400",
        "wall clock: look at every user at least this often, so that no profile's health, R "
        "and P(alive) are older (0 = off); a new churn model refreshes all within 10 minutes",
    ),
    (
        "USERPULSE_BATCH_MAX_EVENTS",
        "1000",
        "most events a worker takes in one batch (one state write per user per batch)",
    ),
    (
        "USERPULSE_BATCH_WAIT_MS",
        "20",
        "longest a worker waits for a batch to fill, in ms (the latency batching adds)",
    ),
    (
        "USERPULSE_SESSION_TIMEOUT_S",
        "30",
        "seconds before the group gives a crashed worker's partitions to the others",
    ),
    (
        "USERPULSE_POLICY_FILE",
        "",
        "the operations policy (TOML; see deploy/policy.toml); empty = built-in defaults",
    ),
    # The local development stack (`userpulse stack up`):
    (
        "USERPULSE_STACK_DIR",
        ".userpulse/stack",
        "where the local stack keeps configs, data, logs and pid files",
    ),
    (
        "USERPULSE_STACK_CACHE_DIR",
        "~/.cache/userpulse",
        "where Kafka's jars are cached (shared by all checkouts)",
    ),
    ("USERPULSE_STACK_KAFKA_PORT", "9092", "local Kafka broker port (127.0.0.1)"),
    ("USERPULSE_STACK_CONTROLLER_PORT", "9093", "local KRaft controller port (127.0.0.1)"),
    ("USERPULSE_STACK_REDIS_PORT", "6379", "local Redis port (127.0.0.1)"),
    ("USERPULSE_STACK_TIMEOUT_S", "90", "how long `stack up` waits for Kafka and Redis to answer"),
)

_DEFAULTS = {name: default for name, default, _ in REFERENCE}
_STORES = ("rocksdb://", "memory://")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a userpulse process is configured with."""

    kafka_bootstrap: str = _DEFAULTS["USERPULSE_KAFKA_BOOTSTRAP"]
    redis_url: Secret = field(default_factory=lambda: Secret(_DEFAULTS["USERPULSE_REDIS_URL"]))
    topic_prefix: str = ""
    app_id: str = "userpulse"
    store: str = "rocksdb://"
    data_dir: Path = Path(".userpulse/data")
    web_port: int = 6066
    partitions: int = 8
    redis_key_prefix: str = "up:"
    log_level: str = "info"
    max_event_bytes: int = 65536
    max_future_skew_s: int = 600
    policy_file: Path | None = None
    session_timeout_s: int = 30
    clock: str = "wall"
    batch_max_events: int = 1000
    batch_wait_ms: int = 20
    #: wall clock: the most a profile's time-dependent numbers may age, in s (0: off)
    profile_refresh_s: int = 86400
    #: stream clock: seconds past a deadline before a busy partition fires it (None: never)
    stream_lateness_s: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        unknown = sorted(k for k in env if k.startswith("USERPULSE_") and k not in _DEFAULTS)
        if unknown:
            raise ConfigError(
                unknown[0],
                "is not a userpulse setting",
                "remove it or use one of: " + ", ".join(_DEFAULTS),
            )

        def get(name: str) -> str:
            return env.get(name, _DEFAULTS[name]).strip()

        bootstrap = get("USERPULSE_KAFKA_BOOTSTRAP")
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    "USERPULSE_KAFKA_BOOTSTRAP",
                    f"{server!r} is not host:port",
                    "set it like 127.0.0.1:9092 or broker1:9092,broker2:9092",
                )
        redis_url = get("USERPULSE_REDIS_URL")
        if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                "USERPULSE_REDIS_URL",
                f"{redact_url(redis_url)!r} is not a redis://, rediss:// or unix:// URL",
                "set it like redis://127.0.0.1:6379/0",
            )
        store = get("USERPULSE_STORE")
        if store not in _STORES:
            raise ConfigError(
                "USERPULSE_STORE", f"{store!r} is not supported", "use one of " + ", ".join(_STORES)
            )
        log_level = get("USERPULSE_LOG_LEVEL").lower()
        if log_level not in _LOG_LEVELS:
            raise ConfigError(
                "USERPULSE_LOG_LEVEL",
                f"{log_level!r} is unknown",
                "use one of " + ", ".join(_LOG_LEVELS),
            )
        app_id = get("USERPULSE_APP_ID")
        if not app_id:
            raise ConfigError("USERPULSE_APP_ID", "is empty", "set a name, e.g. userpulse")
        return cls(
            kafka_bootstrap=bootstrap,
            redis_url=Secret(redis_url),
            topic_prefix=get("USERPULSE_TOPIC_PREFIX"),
            app_id=app_id,
            store=store,
            data_dir=Path(get("USERPULSE_DATA_DIR")),
            web_port=_int(env, "USERPULSE_WEB_PORT", 1, 65535),
            partitions=_int(env, "USERPULSE_PARTITIONS", 1, 10_000),
            redis_key_prefix=get("USERPULSE_REDIS_KEY_PREFIX"),
            log_level=log_level,
            max_event_bytes=_int(env, "USERPULSE_MAX_EVENT_BYTES", 256, 16 * 1024 * 1024),
            max_future_skew_s=_int(env, "USERPULSE_MAX_FUTURE_SKEW_S", 0, 365 * 86400),
            session_timeout_s=_int(env, "USERPULSE_SESSION_TIMEOUT_S", 6, 1800),
            clock=_clock(get("USERPULSE_CLOCK")),
            batch_max_events=_int(env, "USERPULSE_BATCH_MAX_EVENTS", 1, 100_000),
            batch_wait_ms=_int(env, "USERPULSE_BATCH_WAIT_MS", 1, 10_000),
            profile_refresh_s=_int(env, "USERPULSE_PROFILE_REFRESH_S", 0, 365 * 86400),
            stream_lateness_s=_int(env, "USERPULSE_STREAM_LATENESS_S", 0, 10 * 365 * 86400)
            if get("USERPULSE_STREAM_LATENESS_S")
            else None,
            policy_file=Path(get("USERPULSE_POLICY_FILE"))
            if get("USERPULSE_POLICY_FILE")
            else None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings (for child processes)."""
        return {
            "USERPULSE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "USERPULSE_REDIS_URL": self.redis_url.reveal(),
            "USERPULSE_TOPIC_PREFIX": self.topic_prefix,
            "USERPULSE_APP_ID": self.app_id,
            "USERPULSE_STORE": self.store,
            "USERPULSE_DATA_DIR": str(self.data_dir),
            "USERPULSE_WEB_PORT": str(self.web_port),
            "USERPULSE_PARTITIONS": str(self.partitions),
            "USERPULSE_REDIS_KEY_PREFIX": self.redis_key_prefix,
            "USERPULSE_LOG_LEVEL": self.log_level,
            "USERPULSE_MAX_EVENT_BYTES": str(self.max_event_bytes),
            "USERPULSE_MAX_FUTURE_SKEW_S": str(self.max_future_skew_s),
            "USERPULSE_POLICY_FILE": str(self.policy_file) if self.policy_file else "",
            "USERPULSE_SESSION_TIMEOUT_S": str(self.session_timeout_s),
            "USERPULSE_CLOCK": self.clock,
            "USERPULSE_BATCH_MAX_EVENTS": str(self.batch_max_events),
            "USERPULSE_BATCH_WAIT_MS": str(self.batch_wait_ms),
            "USERPULSE_PROFILE_REFRESH_S": str(self.profile_refresh_s),
            "USERPULSE_STREAM_LATENESS_S": ""
            if self.stream_lateness_s is None
            else str(self.stream_lateness_s),
        }

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


def _clock(value: str) -> str:
    if value not in ("wall", "stream"):
        raise ConfigError(
            "USERPULSE_CLOCK",
            f"{value!r} is not a clock",
            "use wall (live: timers on wall-clock time) or stream (replays: on event time)",
        )
    return value


def _int(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = env.get(name, _DEFAULTS[name]).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            name, f"{raw!r} is not a whole number", f"set a number from {low} to {high}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is out of range", f"set a number from {low} to {high}")
    return value


@dataclass(frozen=True, slots=True)
class StackSettings:
    """Settings of the local development stack (Kafka + Redis on 127.0.0.1)."""

    stack_dir: Path = Path(".userpulse/stack")
    cache_dir: Path = field(default_factory=lambda: Path("~/.cache/userpulse").expanduser())
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    timeout_s: int = 90

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        env = os.environ if environ is None else environ
        Settings.from_env(env)  # reject unknown or malformed USERPULSE_* keys early
        kafka_port = _int(env, "USERPULSE_STACK_KAFKA_PORT", 1, 65535)
        controller_port = _int(env, "USERPULSE_STACK_CONTROLLER_PORT", 1, 65535)
        redis_port = _int(env, "USERPULSE_STACK_REDIS_PORT", 1, 65535)
        ports = [kafka_port, controller_port, redis_port]
        if len(set(ports)) != len(ports):
            raise ConfigError(
                "USERPULSE_STACK_*_PORT",
                f"Kafka, controller and Redis ports must differ, got {ports}",
                "give each its own port",
            )
        return cls(
            stack_dir=Path(env.get("USERPULSE_STACK_DIR", _DEFAULTS["USERPULSE_STACK_DIR"])),
            cache_dir=Path(
                env.get("USERPULSE_STACK_CACHE_DIR", _DEFAULTS["USERPULSE_STACK_CACHE_DIR"])
            ).expanduser(),
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
            timeout_s=_int(env, "USERPULSE_STACK_TIMEOUT_S", 5, 3600),
        )
