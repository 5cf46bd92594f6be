"""The committer's order (docs/reliability.md): sends acknowledged, then the
changelog acknowledged, then one local write batch, then the records
acknowledged — with fakes for the producer and the store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from agents.worker.committer import Committer, Effects
from streams.state import new_state


@dataclass
class Metadata:
    offset: int


class World:
    """A producer whose deliveries resolve when told, a store, a journal."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.offsets: dict[tuple[str, int | None], int] = {}
        self.fail = False

    async def send(self, topic: str, key: Any, value: Any, partition: Any, headers: Any) -> Any:
        self.journal.append(f"send {topic} {key!r}")
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1

        async def delivered() -> Metadata:
            await asyncio.sleep(0)
            if self.fail:
                raise RuntimeError("broker gone")
            self.journal.append(f"acked {topic} {key!r}")
            return Metadata(offset)

        return asyncio.ensure_future(delivered())

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        return None

    def write_batch(self, tp: TP, writes: Mapping[bytes, bytes | None], offset: int) -> None:
        self.journal.append(f"write {tp.partition} {sorted(writes)} @{offset}")

    async def ack(self, record: Any) -> None:
        self.journal.append(f"ack {record}")


def test_a_batch_becomes_durable_in_order() -> None:
    async def scenario() -> tuple[list[str], Committer]:
        world = World()
        errors: list[BaseException] = []

        async def on_error(error: BaseException) -> None:
            errors.append(error)

        committer = Committer(world.send, "changelog", lambda: world, on_error=on_error)
        state = new_state("u1", 0)
        effects = Effects(
            3,
            sends=[("triggers", b"u1", b"t", None)],
            writes={b"u1": (state, b"s1")},
            inputs=["r1", "r2"],
            ack=world.ack,
        )
        await committer.submit(effects)
        assert committer.pending_state(b"u1") == (True, state)  # visible at once
        await committer.drain()
        assert not errors
        return world.journal, committer

    journal, committer = asyncio.run(scenario())
    assert journal == [
        "send triggers b'u1'",
        "acked triggers b'u1'",
        "send changelog b'u1'",
        "acked changelog b'u1'",
        "write 3 [b'u1'] @0",
        "ack r1",
        "ack r2",
    ]
    assert committer.pending_state(b"u1") == (False, None)  # stored: read from the store now


def test_a_failed_send_commits_nothing_after_it_and_drain_returns() -> None:
    async def scenario() -> tuple[list[str], list[BaseException]]:
        world = World()
        world.fail = True
        errors: list[BaseException] = []

        async def on_error(error: BaseException) -> None:
            errors.append(error)

        committer = Committer(world.send, "changelog", lambda: world, on_error=on_error)
        for n in range(3):
            await committer.submit(
                Effects(0, sends=[("triggers", b"u", b"t", None)],
                        writes={b"u": (None, b"s")}, inputs=[f"r{n}"], ack=world.ack)
            )  # fmt: skip
        await asyncio.wait_for(committer.drain(), 5)
        return world.journal, errors

    journal, errors = asyncio.run(scenario())
    assert [str(e) for e in errors] == ["broker gone"]
    assert not [line for line in journal if line.startswith(("send changelog", "write", "ack "))]


class Refusing(World):
    """A producer that refuses records of one topic: at once when they are
    over ``max_bytes``, on delivery for the first ``failures`` others."""

    def __init__(self, topic: str, max_bytes: int, failures: int) -> None:
        super().__init__()
        self.topic = topic
        self.max_bytes = max_bytes
        self.failures = failures

    async def send(self, topic: str, key: Any, value: Any, partition: Any, headers: Any) -> Any:
        if topic == self.topic:
            if value is not None and len(value) > self.max_bytes:
                self.journal.append(f"refused {topic} {len(value)} bytes")
                raise RuntimeError("MessageSizeTooLargeError")
            if self.failures > 0:
                self.failures -= 1
                self.journal.append(f"failed {topic} {value!r}")
                raise RuntimeError("broker gone")
        return await super().send(topic, key, value, partition, headers)


def dead_letter_effects(world: World, n: int) -> Effects:
    letter = ("dlq", b"u", b"x" * 100, None)
    by_reference = ("dlq", b"u", None, None)
    return Effects(
        0,
        sends=[("triggers", b"u", b"t", None)],
        dead_letters=[(letter, by_reference)],
        writes={b"u": (None, b"s")},
        inputs=[f"r{n}"],
        ack=world.ack,
    )


def test_a_dead_letter_that_cannot_be_sent_goes_by_reference_and_is_retried() -> None:
    async def scenario() -> tuple[list[str], list[BaseException], Committer]:
        world = Refusing("dlq", max_bytes=10, failures=2)
        errors: list[BaseException] = []

        async def on_error(error: BaseException) -> None:
            errors.append(error)

        committer = Committer(
            world.send, "changelog", lambda: world, on_error=on_error, retry_delay_s=0.001
        )
        await committer.submit(dead_letter_effects(world, 1))
        await committer.submit(dead_letter_effects(world, 2))

        async def committed() -> None:
            while committer.committed_batches < 2:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(committed(), 5)  # not drain(): a shutdown ends the retries
        return world.journal, errors, committer

    journal, errors, committer = asyncio.run(scenario())
    assert not errors, "a dead letter that cannot be sent must not stop the worker"
    assert journal.count("refused dlq 100 bytes") == 2
    assert journal.count("failed dlq None") == 2  # retried until acknowledged
    assert journal.count("acked dlq b'u'") == 2
    assert [line for line in journal if line.startswith("ack ")] == ["ack r1", "ack r2"]
    assert committer.dead_letter_fallbacks == 2


def test_a_dead_letter_still_unsent_at_shutdown_leaves_its_batch_uncommitted() -> None:
    async def scenario() -> tuple[list[str], list[BaseException]]:
        world = Refusing("dlq", max_bytes=10, failures=10**9)
        errors: list[BaseException] = []

        async def on_error(error: BaseException) -> None:
            errors.append(error)

        committer = Committer(
            world.send, "changelog", lambda: world, on_error=on_error, retry_delay_s=0.001
        )
        await committer.submit(dead_letter_effects(world, 1))
        while "failed dlq None" not in world.journal:  # the retries have begun
            await asyncio.sleep(0)
        await asyncio.wait_for(committer.drain(), 5)
        return world.journal, errors

    journal, errors = asyncio.run(scenario())
    assert not errors  # a shutdown, not a crash
    assert not [line for line in journal if line.startswith(("send changelog", "write", "ack "))]
