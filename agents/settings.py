"""One frozen settings object, built once at start-up from ``USERPULSE_*``
environment variables. Nothing else in userpulse reads the environment.

Each setting is declared once, as a field of :class:`Settings` (the worker) or
:class:`StackSettings` (the local stack) made by
:func:`~agents.envvars.setting`: its variable, type, default, meaning and
check (the checks are in :mod:`agents.envchecks`). The constructor defaults,
``from_env`` with its messages, ``to_env``, :data:`REFERENCE` and
:func:`describe` (what ``userpulse settings`` prints: each value and where it
came from) are derived from those declarations, and a unit test holds the
README's settings table to them.

The topic prefix is the environment's one name; the app id (consumer group,
changelog and Faust's internal topics), the Redis key prefix and the data dir
derive from it unless set (docs/environments.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agents import envchecks as checks
from agents.envvars import (
    PREFIX,
    Secret,
    declarations,
    env_text,
    origin,
    read_fields,
    redact_url,
    setting,
)
from streams.errors import ConfigError
from streams.policy import DEFAULT_POLICY, Policy
from streams.policy_file import parse_policy


# ---- the worker ----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a userpulse process is configured with; each field is the one
    declaration of its ``USERPULSE_*`` variable.

    The topic prefix names the environment: the app id, the Redis key prefix
    and the data dir are derived from it unless set, as templates in which
    :data:`PREFIX` stands for the prefix (an explicit value may use it too).
    They are resolved when the object is made, so ``dataclasses.replace`` of
    the prefix alone keeps the other names as they were.
    """

    kafka_bootstrap: str = setting(
        "USERPULSE_KAFKA_BOOTSTRAP",
        "127.0.0.1:9092",
        "Kafka bootstrap servers, host:port[,host:port]",
        checks.bootstrap,
    )
    redis_url: Secret = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis URL for the profile projection (a password in it is kept secret)",
        checks.redis_url,
    )
    topic_prefix: str = setting(
        "USERPULSE_TOPIC_PREFIX",
        "",
        "the environment's one name: begins every topic; the consumer group, the Redis "
        "key prefix and the data dir derive from it (docs/environments.md)",
        checks.kafka_name("the topic prefix", empty=True),
    )
    app_id: str = setting(
        "USERPULSE_APP_ID",
        f"{PREFIX}userpulse",
        "Faust app id = Kafka consumer group; begins the changelog and Faust's internal topics",
        checks.kafka_name("the app id", empty=False),
        derived_from="USERPULSE_TOPIC_PREFIX",
    )
    store: str = setting(
        "USERPULSE_STORE",
        "rocksdb://",
        "table store: rocksdb:// (durable local state) or memory://",
        checks.one_of("rocksdb://", "memory://"),
    )
    data_dir: Path = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_DATA_DIR",
        f".userpulse/{PREFIX}data",
        "where the worker keeps its RocksDB tables (one environment's only)",
        checks.path,
        derived_from="USERPULSE_TOPIC_PREFIX",
    )
    web_port: int = setting(
        "USERPULSE_WEB_PORT",
        "6066",
        "port of the worker's HTTP endpoint: health, counters (one per worker on a host)",
        checks.PORT,
    )
    web_bind: str = setting(
        "USERPULSE_WEB_BIND",
        "0.0.0.0",
        "address the HTTP endpoint listens on (127.0.0.1: this host only)",
        checks.host,
    )
    unreachable_s: int = setting(
        "USERPULSE_UNREACHABLE_S",
        "30",
        "readiness: a worker whose Kafka or Redis has not answered for this many seconds "
        "reports not ready (GET /health/ready)",
        checks.whole(1, 3600),
    )
    partitions: int = setting(
        "USERPULSE_PARTITIONS",
        "8",
        "partitions of user-events and the tables (the unit of scaling)",
        checks.whole(1, 10_000),
    )
    redis_key_prefix: str = setting(
        "USERPULSE_REDIS_KEY_PREFIX",
        f"{PREFIX}up:",
        "prefix for every Redis key the projection writes (one environment's only)",
        checks.text,
        derived_from="USERPULSE_TOPIC_PREFIX",
    )
    log_level: str = setting(
        "USERPULSE_LOG_LEVEL",
        "info",
        "worker log level: debug, info, warning, error",
        checks.one_of("debug", "info", "warning", "error", problem="is unknown", lower=True),
    )
    log_format: str = setting(
        "USERPULSE_LOG_FORMAT",
        "auto",
        "worker log lines: text, json (one object per line), or auto (json when the log "
        "does not go to a terminal)",
        checks.one_of("auto", "text", "json", problem="is not a log format", lower=True),
    )
    max_event_bytes: int = setting(
        "USERPULSE_MAX_EVENT_BYTES",
        "65536",
        "largest accepted event record, in bytes",
        checks.whole(256, 16 * 1024 * 1024),
    )
    max_future_skew_s: int = setting(
        "USERPULSE_MAX_FUTURE_SKEW_S",
        "600",
        "how far in the future an event timestamp may be, in seconds",
        checks.whole(0, 365 * checks.DAY),
    )
    clock: str = setting(
        "USERPULSE_CLOCK",
        "wall",
        "timers fire on wall-clock time (wall, live) or on stream time (stream, replays)",
        checks.one_of(
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
        checks.optional(checks.whole(0, 10 * 365 * checks.DAY)),
    )
    profile_refresh_s: int = setting(
        "USERPULSE_PROFILE_REFRESH_S",
        "86400",
        "wall clock: look at every user at least this often, so that no profile's health, R "
        "and P(alive) are older (0 = off); a new churn model refreshes all within 10 minutes",
        checks.whole(0, 365 * checks.DAY),
    )
    batch_max_events: int = setting(
        "USERPULSE_BATCH_MAX_EVENTS",
        "1000",
        "most events a worker takes in one batch (one state write per user per batch)",
        checks.whole(1, 100_000),
    )
    batch_wait_ms: int = setting(
        "USERPULSE_BATCH_WAIT_MS",
        "20",
        "longest a worker waits for a batch to fill, in ms (the latency batching adds)",
        checks.whole(1, 10_000),
    )
    standby_replicas: int = setting(
        "USERPULSE_STANDBY_REPLICAS",
        "1",
        "standby copies of each table partition kept warm on other workers (0 = none): a "
        "worker taking over a partition with a standby recovers only the changelog's tail",
        checks.whole(0, 10),
    )
    session_timeout_s: int = setting(
        "USERPULSE_SESSION_TIMEOUT_S",
        "30",
        "seconds before the group gives a crashed worker's partitions to the others",
        checks.whole(6, 1800),
    )
    policy_file: Path | None = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_POLICY_FILE",
        "",
        "the operations policy (TOML; see deploy/policy.toml); empty = built-in defaults",
        checks.optional(checks.path),
    )

    def __post_init__(self) -> None:
        # a derived value is a template: PREFIX stands for the topic prefix
        for name, spec in declarations(Settings):
            if spec.derived_from:
                value = getattr(self, name)
                text = str(value).replace(PREFIX, self.topic_prefix)
                object.__setattr__(self, name, Path(text) if isinstance(value, Path) else text)

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
        return cls(**read_fields(cls, with_stack_endpoints(env)))

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings (for child processes)."""
        return {spec.env: env_text(getattr(self, name)) for name, spec in declarations(Settings)}

    def load_policy(self) -> Policy:
        """The operations policy from ``USERPULSE_POLICY_FILE`` (defaults when unset)."""
        return load_policy_file(self.policy_file, key="USERPULSE_POLICY_FILE", unset="unset it")

    def topic(self, name: str) -> str:
        """The real name of contract topic ``name`` under this deployment's prefix."""
        return f"{self.topic_prefix}{name}"


#: a worker setting left unset → the local stack's port setting it follows
STACK_ENDPOINTS = {
    "USERPULSE_KAFKA_BOOTSTRAP": ("USERPULSE_STACK_KAFKA_PORT", "127.0.0.1:{port}"),
    "USERPULSE_REDIS_URL": ("USERPULSE_STACK_REDIS_PORT", "redis://127.0.0.1:{port}/0"),
}


def with_stack_endpoints(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with Kafka and Redis at the local stack's ports when only those
    are set: a command run with the same ``USERPULSE_STACK_*_PORT`` as
    ``userpulse stack up`` finds that stack without the exports it printed.
    An explicit ``USERPULSE_KAFKA_BOOTSTRAP`` / ``USERPULSE_REDIS_URL`` wins."""
    derived = {
        name: template.format(port=env[port].strip())
        for name, (port, template) in STACK_ENDPOINTS.items()
        if name not in env and port in env and env[port].strip()
    }
    return {**env, **derived} if derived else env


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
        checks.path,
    )
    cache_dir: Path = setting(  # noqa: RUF009 (a field specifier)
        "USERPULSE_STACK_CACHE_DIR",
        "~/.cache/userpulse",
        "where Kafka's jars are cached (shared by all checkouts)",
        checks.home_path,
    )
    kafka_port: int = setting(
        "USERPULSE_STACK_KAFKA_PORT", "9092", "local Kafka broker port (127.0.0.1)", checks.PORT
    )
    controller_port: int = setting(
        "USERPULSE_STACK_CONTROLLER_PORT",
        "9093",
        "local KRaft controller port (127.0.0.1)",
        checks.PORT,
    )
    redis_port: int = setting(
        "USERPULSE_STACK_REDIS_PORT", "6379", "local Redis port (127.0.0.1)", checks.PORT
    )
    timeout_s: int = setting(
        "USERPULSE_STACK_TIMEOUT_S",
        "90",
        "how long `stack up` waits for Kafka and Redis to answer",
        checks.whole(5, 3600),
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


def describe(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """(variable, value, where it came from, meaning) of every setting as
    ``environ`` (default: the process environment) makes it — what
    ``userpulse settings`` prints; a bad value raises as ``from_env`` does."""
    env = os.environ if environ is None else environ
    rows = []
    for built in (Settings.from_env(env), StackSettings.from_env(env)):
        for name, spec in declarations(type(built)):
            value = getattr(built, name)
            text = redact_url(value.reveal()) if isinstance(value, Secret) else env_text(value)
            source = origin(spec, env)
            port = STACK_ENDPOINTS.get(spec.env, ("", ""))[0]
            if spec.env not in env and port in env:
                source = f"derived from {port}"
            rows.append((spec.env, text, source, spec.doc))
    return rows
