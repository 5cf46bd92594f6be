"""Shared fixtures.

Integration and end-to-end tests run against a real Kafka broker and a real
Redis server. The session starts the project's own local stack once (in a
temporary directory, on free ports) and stops it at the end — unless
USERPULSE_KAFKA_BOOTSTRAP is set, in which case that stack (and
USERPULSE_REDIS_URL) is used as it is. Each test gets its own environment
(topic prefix, and so consumer group and Redis key prefix) and data dir, so
tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.envvars import Secret
from agents.errors import StackError
from agents.settings import Settings, StackSettings
from agents.stack.local import Stack
from agents.stack.network import free_port, free_ports


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    started_here: bool


@pytest.fixture(scope="session")
def stack_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    external = os.environ.get("USERPULSE_KAFKA_BOOTSTRAP")
    if external:
        redis_url = os.environ.get("USERPULSE_REDIS_URL", "redis://127.0.0.1:6379/0")
        print(f"\nusing the running stack: Kafka {external}, Redis {redis_url}")
        yield Endpoints(external, redis_url, started_here=False)
        return
    defaults = StackSettings.from_env({})  # the cache dir and timeout defaults
    for attempt in (1, 2):
        ports = dict(
            zip(("kafka_port", "controller_port", "redis_port"), free_ports(3), strict=True)
        )
        stack = Stack(
            StackSettings(
                stack_dir=tmp_path_factory.mktemp("stack"),
                cache_dir=defaults.cache_dir,
                timeout_s=defaults.timeout_s,
                **ports,
            ),
            progress=lambda message: print(f"stack: {message}"),
        )
        try:
            endpoints = stack.up()
            break
        except StackError as error:
            stack.down()  # whatever did start (Redis before a failed Kafka) must not linger
            # a free port can be taken by another process before we bind it: once more
            if attempt == 2 or "in use" not in str(error):
                raise
        except BaseException:
            stack.down()
            raise
    try:
        yield Endpoints(endpoints.kafka_bootstrap, endpoints.redis_url, started_here=True)
    finally:
        stack.down()


@pytest.fixture
def settings(stack_endpoints: Endpoints, tmp_path: Path) -> Settings:
    """Settings isolated to this test: its own environment (a topic prefix, from
    which its consumer group, changelog and Redis keys derive), data dir, port."""
    run = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=stack_endpoints.kafka_bootstrap,
        redis_url=Secret(stack_endpoints.redis_url),
        topic_prefix=f"t{run}-",
        store="rocksdb://",
        data_dir=tmp_path / "data",
        web_port=free_port(),
        partitions=4,
        log_level="info",
        log_format="text",  # the tests read worker logs as text (tests/e2e/test_json_logs.py: JSON)
        session_timeout_s=8,  # a SIGKILLed worker's partitions move on quickly
    )
