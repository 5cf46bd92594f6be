"""An environment's claims on what it shares with others: checked before a
worker joins its group, so that two environments on one Kafka cluster, one
Redis or one host never mix their state (docs/environments.md).

An environment is named by its topic prefix; its *identity* is that prefix
and its app id. A worker refuses to start, with one line naming the conflict
and the fix, when

- its **data dir** holds another identity's marker file
  (:data:`MARKER_FILE`, written on first use);
- its **Redis key prefix** is claimed by another identity (the marker key
  ``{p}environment``, set on first use; :func:`check_redis_prefix` reads it
  without claiming, for the reading commands);
- its **consumer group** has members that consume, or committed offsets of,
  topics of another environment.

Redis unreachable at start-up is not a refusal (the worker runs without
Redis and catches up, docs/redis.md): the claim is then only logged as not
checked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka.errors import KafkaError

from agents.errors import ConfigError
from agents.kafka.admin import admin_client
from agents.kafka.clients import unreachable
from agents.kafka.model_topic import MODEL_TOPIC
from agents.redis.keys import environment_key
from agents.settings import Settings
from streams import topics

logger = logging.getLogger(__name__)

#: The marker file in the data dir: the identity whose tables it holds.
MARKER_FILE = "userpulse-environment.json"
#: How long to wait for the group coordinator of a broker that has none yet.
COORDINATOR_WAIT_S = 30.0


def identity(settings: Settings) -> dict[str, str]:
    """What an environment's markers record: its topic prefix and app id."""
    return {"topic_prefix": settings.topic_prefix, "app_id": settings.app_id}


def _said(doc: Any) -> str:
    if isinstance(doc, dict) and {"topic_prefix", "app_id"} <= doc.keys():
        return f"topic prefix {doc['topic_prefix']!r}, app id {doc['app_id']!r}"
    return f"an unreadable marker {doc!r}"


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def claim_environment(settings: Settings) -> None:
    """Every claim of a worker of ``settings``, before it joins its group:
    the consumer group (only looked at), then the data dir and the Redis key
    prefix (marked on first use). Raises :class:`ConfigError` at the first
    conflict, so a refused worker changes nothing of another environment's."""
    check_consumer_group(settings)
    claim_data_dir(settings)
    claim_redis_prefix(settings)


# ---- the data dir ------------------------------------------------------------------
def claim_data_dir(settings: Settings) -> None:
    """Write the marker file in an unmarked data dir (a dir written before
    markers existed is adopted); refuse one marked by another identity. A
    ``memory://`` store keeps no tables there and claims nothing."""
    if settings.store == "memory://":
        return
    marker = settings.data_dir / MARKER_FILE
    mine = identity(settings)
    try:
        if not marker.exists():
            _write_marker(marker, orjson.dumps(mine) + b"\n")
        theirs = _decode(marker.read_bytes())
        probe = settings.data_dir / f".probe.{os.getpid()}"  # full or read-only: say so now
        probe.write_bytes(b"userpulse")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            "USERPULSE_DATA_DIR",
            f"cannot use {settings.data_dir} ({exc.strerror or exc})",
            "point it at a directory this worker can write, with free space",
        ) from None
    if theirs != mine:
        raise ConfigError(
            "USERPULSE_DATA_DIR",
            f"{settings.data_dir} holds the tables of another environment ({_said(theirs)}; "
            f"this one is {_said(mine)})",
            "give this environment a data dir of its own (unset USERPULSE_DATA_DIR to derive "
            f"it from the topic prefix), or delete {settings.data_dir} if that environment "
            "is gone",
        )


def _write_marker(marker: Path, content: bytes) -> None:
    """Write ``marker`` whole, unless another worker wrote it meanwhile."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    fresh = marker.with_name(f".{MARKER_FILE}.{os.getpid()}")
    fresh.write_bytes(content)
    try:
        os.link(fresh, marker)  # atomic, and fails on an existing marker
    except FileExistsError:
        pass  # the other worker's marker is compared with this one's identity
    finally:
        fresh.unlink()


# ---- the Redis key prefix ----------------------------------------------------------
def _redis_conflict(settings: Settings, theirs: Any) -> ConfigError:
    return ConfigError(
        "USERPULSE_REDIS_KEY_PREFIX",
        f"Redis keys {settings.redis_key_prefix!r}… belong to another environment "
        f"({_said(theirs)}; this one is {_said(identity(settings))})",
        "unset USERPULSE_REDIS_KEY_PREFIX to derive one from the topic prefix, or set one "
        f"of its own (delete the key {environment_key(settings.redis_key_prefix)} only if "
        "that environment is gone)",
    )


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url.reveal(), socket_timeout=5)


def claim_redis_prefix(settings: Settings, client: redis.Redis | None = None) -> None:
    """Set the marker key of an unclaimed prefix; refuse a prefix claimed by
    another identity. Redis unreachable: logged, not refused."""
    own = client is None
    client = client or _client(settings)
    key = environment_key(settings.redis_key_prefix)
    mine = identity(settings)
    try:
        if client.set(key, orjson.dumps(mine), nx=True):
            return
        raw = client.get(key)
    except (redis.RedisError, OSError) as exc:
        logger.warning("Redis key prefix not checked: cannot reach Redis (%s)", exc)
        return
    finally:
        if own:
            client.close()
    theirs = _decode(raw) if isinstance(raw, bytes) else raw
    if theirs is not None and theirs != mine:
        raise _redis_conflict(settings, theirs)


def check_redis_prefix(settings: Settings, client: redis.Redis) -> None:
    """Refuse to read a prefix another identity claimed (claims nothing);
    for the commands that read profiles."""
    raw = client.get(environment_key(settings.redis_key_prefix))
    if raw is None:
        return
    theirs = _decode(raw.encode() if isinstance(raw, str) else raw)
    if theirs != identity(settings):
        raise _redis_conflict(settings, theirs)


# ---- the consumer group ------------------------------------------------------------
def own_topic(settings: Settings, topic: str) -> bool:
    """Whether the group of ``settings`` may consume ``topic``: one of its
    prefixed topics, or one of Faust's for its app id (changelog, leader)."""
    own = {settings.topic(name) for name in (*topics.ALL_TOPICS, MODEL_TOPIC)}
    return topic in own or topic.startswith(f"{settings.app_id}-")


def _member_topics(member: dict[str, Any]) -> Iterable[str]:
    metadata = member.get("member_metadata")
    if isinstance(metadata, dict):
        yield from metadata.get("topics") or ()
    assignment = member.get("member_assignment")
    if isinstance(assignment, dict):
        for assigned in assignment.get("assigned_partitions") or ():
            yield assigned["topic"]


def _group_topics(settings: Settings) -> tuple[set[str], set[str]]:
    """The topics the live members of the group of ``settings`` consume, and
    those it has committed offsets of. A broker's group coordinator may not be
    available yet (a new cluster creates its offsets topic on first use):
    retried for up to :data:`COORDINATOR_WAIT_S`."""
    group = settings.app_id
    admin = admin_client(settings)
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    try:
        while True:
            try:
                described = admin.describe_groups([group]).get(group) or {}
                committed = admin.list_group_offsets(group).get(group, {})
                break
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise unreachable(settings.kafka_bootstrap, exc) from None
                time.sleep(0.2)
            except OSError as exc:
                raise unreachable(settings.kafka_bootstrap, exc) from None
    finally:
        admin.close()
    consumed = {t for m in described.get("members") or () for t in _member_topics(m)}
    return consumed, {tp.topic for tp in committed}


def check_consumer_group(settings: Settings) -> None:
    """Refuse a group whose live members consume, or that has committed
    offsets of, topics that are not this environment's."""
    consumed, committed = _group_topics(settings)
    for topic_names, what in ((consumed, "has members consuming"), (committed, "has offsets of")):
        foreign = sorted(t for t in topic_names if not own_topic(settings, t))
        if foreign:
            raise ConfigError(
                "USERPULSE_APP_ID",
                f"consumer group {settings.app_id!r} {what} {', '.join(foreign)}, not topics "
                f"of this environment (topic prefix {settings.topic_prefix!r})",
                "give this environment a group of its own: unset USERPULSE_APP_ID to derive "
                "it from the topic prefix, or set another",
            )
