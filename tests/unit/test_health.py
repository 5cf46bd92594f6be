"""The worker's readiness rule and its probes (agents/worker/health.py), and
the start-up check of its HTTP port (a second worker on a host)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest

from agents.settings import Settings
from agents.worker.health import Dependency, Membership, Prober, readiness
from agents.worker.process import check_web_port
from streams.errors import ConfigError

READY = Membership(rebalancing=False, recovered=True, partitions=4)


def answering(name: str, now: float) -> Dependency:
    dep = Dependency(name, since=0.0)
    dep.answered(now)
    return dep


def test_a_member_with_partitions_and_answering_services_is_ready() -> None:
    deps = [answering("Kafka", 100.0), answering("Redis", 100.0)]
    assert readiness(101.0, READY, deps, unreachable_s=30) == []


@pytest.mark.parametrize(
    ("membership", "reason"),
    [
        (Membership(rebalancing=True, recovered=False, partitions=0), "starting"),
        (Membership(rebalancing=True, recovered=True, partitions=4), "rebalancing"),
        (Membership(rebalancing=False, recovered=True, partitions=0), "no partitions assigned"),
    ],
)
def test_not_ready_until_recovered_with_partitions(membership: Membership, reason: str) -> None:
    [said] = readiness(1.0, membership, [answering("Kafka", 1.0)], unreachable_s=30)
    assert said.startswith(reason)


def test_a_service_silent_longer_than_the_setting_makes_it_not_ready() -> None:
    kafka = answering("Kafka", 100.0)
    kafka.unanswered(102.0, "no answer within 4 s")
    assert readiness(120.0, READY, [kafka], unreachable_s=30) == []  # a blip is no outage
    [said] = readiness(131.0, READY, [kafka], unreachable_s=30)
    assert said == "Kafka has not answered for 31 s: no answer within 4 s"
    kafka.answered(132.0)
    assert readiness(132.0, READY, [kafka], unreachable_s=30) == []


def test_a_service_that_has_not_answered_once_makes_it_not_ready() -> None:
    redis = Dependency("Redis", since=10.0)
    assert readiness(10.5, READY, [redis], unreachable_s=30) == ["Redis has not answered yet"]
    redis.unanswered(11.0, "ConnectionError: refused")
    assert readiness(11.5, READY, [redis], unreachable_s=30) == [
        "Redis has not answered yet: ConnectionError: refused"
    ]
    redis.answered(12.0)
    assert readiness(12.5, READY, [redis], unreachable_s=30) == []


def test_the_prober_records_answers_failures_and_time_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agents.worker.health as health

    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.05)

    async def fine() -> None:
        return None

    async def refused() -> None:
        raise ConnectionRefusedError("refused")

    async def frozen() -> None:
        await asyncio.sleep(10)

    prober = Prober({"a": fine, "b": refused, "c": frozen})
    asyncio.run(prober.probe_once())
    a, b, c = (prober.dependencies[n] for n in "abc")
    assert a.error is None and a.answered_at is not None
    assert b.error == "ConnectionRefusedError: refused" and b.answered_at is None
    assert c.error is not None and "no answer within" in c.error


def test_a_taken_web_port_is_one_line_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = dataclasses.replace(Settings(), web_bind="127.0.0.1", web_port=port)
        with pytest.raises(ConfigError) as caught:
            check_web_port(settings)
    message = str(caught.value)
    assert message.startswith(f"USERPULSE_WEB_PORT: port {port} on 127.0.0.1 is in use")
    assert f"--web-port {port + 1}" in message and "\n" not in message
    check_web_port(settings)  # free again: no error


def test_a_stopping_prober_asks_nothing_and_counts_no_failure() -> None:
    asked: list[str] = []

    async def closed() -> None:
        asked.append("closed")
        raise ConnectionError("Connection closed by server.")

    prober = Prober({"Redis": closed})
    prober.stopping.set()
    asyncio.run(prober.probe_once())
    assert asked == [] and prober.dependencies["Redis"].error is None
