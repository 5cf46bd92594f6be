"""The worker's health, as its HTTP endpoint reports it (docs/operations.md):

- ``GET /health/live`` — 200 while the worker's event loop answers (a
  crashed worker exits; one whose loop is stuck does not answer at all);
- ``GET /health/ready`` — 200 when the worker does its job: a member of its
  consumer group with partitions assigned, their tables recovered, and Kafka
  and Redis answering; else 503 with every reason it is not.

Kafka and Redis are asked every :data:`PROBE_S` seconds (a cluster
description, a PING), each within :data:`PROBE_TIMEOUT_S`: a frozen broker
accepts connections but answers nothing, so only an answer counts. One that
has not answered for ``USERPULSE_UNREACHABLE_S`` makes the worker not ready
— a short blip does not — and so does one that has not answered once since
the start. :func:`readiness` is the pure rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

logger = logging.getLogger(__name__)

#: How often Kafka and Redis are asked whether they answer, in seconds.
PROBE_S = 2.0
#: How long an answer may take before the question counts as unanswered.
PROBE_TIMEOUT_S = 4.0


@dataclass
class Dependency:
    """A service the worker needs, and when it last answered."""

    name: str
    #: monotonic seconds when the worker began asking
    since: float
    #: monotonic seconds of its last answer (None: none yet)
    answered_at: float | None = None
    #: why the last question went unanswered (None: it was answered)
    error: str | None = None

    def answered(self, now: float) -> None:
        if self.error is not None and self.answered_at is not None:
            logger.info("health: %s answers again", self.name)
        self.answered_at, self.error = now, None

    def unanswered(self, now: float, error: str) -> None:
        if self.error is None:
            logger.warning("health: %s does not answer (%s)", self.name, error)
        self.error = error

    def silent_s(self, now: float) -> float:
        """For how long it has not answered (0 if its last question was)."""
        if self.error is None and self.answered_at is not None:
            return 0.0
        return now - (self.answered_at if self.answered_at is not None else self.since)


@dataclass(frozen=True)
class Membership:
    """What the worker is in its consumer group, as Faust says it."""

    #: a rebalance or a table recovery is under way
    rebalancing: bool
    #: the first assignment's tables were recovered (the worker took part once)
    recovered: bool
    #: input partitions assigned to this worker
    partitions: int


def readiness(
    now: float, membership: Membership, dependencies: list[Dependency], unreachable_s: float
) -> list[str]:
    """Why the worker is not ready (none: it is)."""
    reasons = []
    if not membership.recovered:
        reasons.append("starting: not yet a member of its consumer group with tables recovered")
    elif membership.rebalancing:
        reasons.append("rebalancing: partitions are being assigned and their tables recovered")
    elif membership.partitions == 0:
        reasons.append(
            "no partitions assigned (more workers than partitions, or the group gave this "
            "one none yet)"
        )
    for dep in dependencies:
        last = f": {dep.error}" if dep.error else ""
        if dep.answered_at is None:
            reasons.append(f"{dep.name} has not answered yet{last}")
            continue
        silent = dep.silent_s(now)
        if silent > unreachable_s:
            reasons.append(f"{dep.name} has not answered for {silent:.0f} s{last}")
    return reasons


class Prober:
    """Asks each dependency in turn, every :data:`PROBE_S`, forever."""

    def __init__(self, probes: dict[str, Callable[[], Awaitable[object]]]) -> None:
        now = time.monotonic()
        self.probes = probes
        self.dependencies = {name: Dependency(name, now) for name in probes}
        #: set when the worker stops: no more questions, and no answer counts
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self.probe_once()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), PROBE_S)

    async def probe_once(self) -> None:
        for name, probe in self.probes.items():
            if self.stopping.is_set():
                return  # the clients it would ask are being closed
            dep = self.dependencies[name]
            try:
                await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
            except TimeoutError:
                failure = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
            except Exception as exc:  # any failure to answer is the answer
                failure = f"{type(exc).__name__}: {exc}"
            else:
                dep.answered(time.monotonic())
                continue
            if not self.stopping.is_set():
                dep.unanswered(time.monotonic(), failure)


class KafkaProbe:
    """Asks the cluster to describe itself, with a client of its own (the
    consumer's runs in Faust's consumer thread); a client that failed is
    closed and the next question made with a new one."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        #: clients of failed questions, being closed
        self._closing: set[asyncio.Future[None]] = set()

    async def ask(self) -> None:
        try:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="userpulse-health",
                    request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                )
                self._admin = admin
                await admin.start()
            await self._admin.describe_cluster()
        except BaseException:  # cancelled by the time limit too: closed meanwhile
            admin, self._admin = self._admin, None
            if admin is not None:
                closing = asyncio.ensure_future(_close(admin))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            raise

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await _close(admin)


async def _close(admin: AIOKafkaAdminClient) -> None:
    with suppress(Exception):
        await asyncio.wait_for(admin.close(), PROBE_TIMEOUT_S)


class Health:
    """The worker's two endpoints on its Faust web server, and the task
    that keeps asking Kafka (``bootstrap``) and Redis (``redis_ping``)."""

    def __init__(
        self,
        app: Any,
        bootstrap: str,
        redis_ping: Callable[[], Awaitable[object]],
        membership: Callable[[], Membership],
        unreachable_s: float,
    ) -> None:
        self.kafka = KafkaProbe(bootstrap)
        self.prober = Prober({"Kafka": self.kafka.ask, "Redis": redis_ping})
        self.membership = membership
        self.unreachable_s = unreachable_s

        # Faust calls a page handler as handler(view, request): plain functions
        async def live(view: Any, request: Any) -> Any:
            return view.json({"live": True})

        async def ready(view: Any, request: Any) -> Any:
            body, ok = self.report()
            return view.json(body, status=200 if ok else 503)

        app.page("/health/live")(live)
        app.page("/health/ready")(ready)
        app.task(self._run)

    def reasons(self) -> list[str]:
        """Why the worker is not ready now (none: it is)."""
        deps = list(self.prober.dependencies.values())
        return readiness(time.monotonic(), self.membership(), deps, self.unreachable_s)

    async def _run(self) -> None:
        await self.prober.run()

    async def close(self) -> None:
        self.prober.stopping.set()
        await self.kafka.close()

    def report(self) -> tuple[dict[str, Any], bool]:
        """The body of ``GET /health/ready``, and whether the worker is ready."""
        now = time.monotonic()
        reasons = self.reasons()
        silent = {name: round(d.silent_s(now), 1) for name, d in self.prober.dependencies.items()}
        return {"ready": not reasons, "reasons": reasons, "silent_s": silent}, not reasons
