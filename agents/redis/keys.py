"""The Redis key layout of the profile projection (``{p}`` is the key
prefix, ``USERPULSE_REDIS_KEY_PREFIX``; docs/redis.md has the full story):

=============================  =========  ==========================================
key                            type       holds
=============================  =========  ==========================================
``{p}profile:{user}``          hash       the profile fields, ``version`` and one
                                          ``idx:{dimension}`` field per membership
``{p}idx:{dimension}:{value}`` set        the users whose ``dimension`` is ``value``
``{p}idxvals:{dimension}``     set        the values of ``dimension`` that have users
``{p}idxdims``                 set        every dimension ever indexed
``{p}erased:{user}``           string     the erasure's version; expires after 7 days
``{p}environment``             string     the environment that owns the prefix (JSON:
                                          topic prefix, app id; agents/environment.py)
``{p}projected:{partition}``   string     the user-state changelog offset up to which
                                          the partition's profiles are all written
=============================  =========  ==========================================

The writer's scripts (:mod:`agents.redis.projection`) build index keys from
the prefix the same way, so the projection needs one Redis primary
(standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

#: The index dimensions the pipeline writes, in display order.
DIMENSIONS: tuple[str, ...] = ("stage", "health", "segment", "tier")

#: How long an erasure's tombstone lives. Profiles never expire (they are a
#: projection of the durable user-state table); tombstones do, after which a
#: replay of pre-erasure events could recreate the profile.
TOMBSTONE_TTL_S = 7 * 24 * 3600

#: The prefix of the hash fields that record a user's index memberships.
INDEX_FIELD_PREFIX = "idx:"


def profile_key(prefix: str, user_id: str) -> str:
    """The hash holding ``user_id``'s profile."""
    return f"{prefix}profile:{user_id}"


def index_key(prefix: str, dimension: str, value: str) -> str:
    """The set of users whose ``dimension`` is ``value`` (e.g. stage = activated)."""
    return f"{prefix}idx:{dimension}:{value}"


def index_values_key(prefix: str, dimension: str) -> str:
    """The set of ``dimension``'s values that currently have at least one user."""
    return f"{prefix}idxvals:{dimension}"


def index_dimensions_key(prefix: str) -> str:
    """The set of every dimension ever indexed."""
    return f"{prefix}idxdims"


def glob_escape(literal: str) -> str:
    """``literal`` as a SCAN MATCH / KEYS pattern that matches only itself:
    Redis's glob characters (``* ? [ ] \\``) escaped with a backslash. A
    prefix or an id holding them, unescaped, would match other keys."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in literal)


def tombstone_key(prefix: str, user_id: str) -> str:
    """The erasure version of ``user_id``, kept for :data:`TOMBSTONE_TTL_S`."""
    return f"{prefix}erased:{user_id}"


def environment_key(prefix: str) -> str:
    """The marker of the environment that owns ``prefix`` (set by its first worker)."""
    return f"{prefix}environment"


def projected_key(prefix: str, partition: int) -> str:
    """The changelog offset up to which ``partition``'s profiles are all in Redis."""
    return f"{prefix}projected:{partition}"
