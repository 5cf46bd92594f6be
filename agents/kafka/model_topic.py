"""The churn model's topic: ``userpulse.model``, compacted, one partition.

A record's value is a fitted :class:`Model`: the BG/NBD parameters and
their provenance. `userpulse fit` publishes each fit to it
(:func:`publish_model`). Every worker follows it from its beginning
(:func:`follow_model`: no consumer group, so every worker sees every
version) and uses the newest parameters (:mod:`agents.worker.model`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.errors import InfrastructureError
from agents.kafka.admin import admin_client
from agents.settings import Settings
from streams.bgnbd import BgNbdError, BgNbdParams

logger = logging.getLogger(__name__)

MODEL_TOPIC = "userpulse.model"
MODEL_KEY = b"bgnbd"

#: Where a fit's as-of time came from, as `userpulse fit` prints and publishes it.
AS_OF_OPTION = "--as-of"
AS_OF_STREAM = "stream time"
AS_OF_WALL = "wall clock"
#: The time unit of a model record that does not say (``userpulse fit``'s default).
DEFAULT_UNIT_DAYS = 7.0


@dataclass(frozen=True)
class Model:
    """Fitted parameters, the unit they were fitted in, and their provenance:
    when the fit ran (wall clock), the as-of time the buyers were summarised
    at and where it came from (``None``: as of ``fitted_at_ms``, as every
    model published before the as-of time was recorded)."""

    params: BgNbdParams
    unit_days: float
    fitted_at_ms: int
    buyers: int
    log_likelihood: float
    as_of_ms: int | None = None
    as_of_source: str = AS_OF_WALL

    def to_json(self) -> bytes:
        p = self.params
        return orjson.dumps(
            {
                "model": "bgnbd",
                "r": p.r,
                "alpha": p.alpha,
                "a": p.a,
                "b": p.b,
                "unit_days": self.unit_days,
                "fitted_at": self.fitted_at_ms,
                "buyers": self.buyers,
                "log_likelihood": self.log_likelihood,
                "as_of": self.fitted_at_ms if self.as_of_ms is None else self.as_of_ms,
                "as_of_source": self.as_of_source,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Model:
        doc = orjson.loads(raw)
        params, unit_days = model_params(doc)
        return cls(
            params,
            unit_days,
            int(doc["fitted_at"]),
            int(doc["buyers"]),
            float(doc["log_likelihood"]),
            int(doc.get("as_of", doc["fitted_at"])),  # older models: as of their fit
            str(doc.get("as_of_source", AS_OF_WALL)),
        )


def model_params(doc: Mapping[str, Any]) -> tuple[BgNbdParams, float]:
    """The parameters and time unit of a model record (``r``, ``alpha``,
    ``a``, ``b``, ``unit_days``; :data:`DEFAULT_UNIT_DAYS` when it has no
    unit). Raises KeyError or TypeError for a missing parameter and
    :class:`~streams.bgnbd.BgNbdError` for a value no model can have."""
    params = BgNbdParams(doc["r"], doc["alpha"], doc["a"], doc["b"])
    unit_days = doc.get("unit_days", DEFAULT_UNIT_DAYS)
    if not isinstance(unit_days, int | float) or isinstance(unit_days, bool) or unit_days <= 0:
        raise BgNbdError(f"unit_days must be a positive number, got {unit_days!r}")
    return params, float(unit_days)


def ensure_model_topic(settings: Settings) -> str:
    """The compacted, single-partition model topic (created when missing)."""
    name = settings.topic(MODEL_TOPIC)
    admin = admin_client(settings)
    try:
        if name not in set(admin.list_topics()):
            new = NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile
                admin.create_topics([new])
    finally:
        admin.close()
    return name


def publish_model(settings: Settings, model: Model) -> None:
    topic = ensure_model_topic(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all")
    try:
        producer.send(topic, key=MODEL_KEY, value=model.to_json()).get(timeout=30)
    except KafkaError as exc:
        raise InfrastructureError(f"could not publish the model to {topic}: {exc}") from None
    finally:
        producer.close()


async def follow_model(
    settings: Settings, on_model: Callable[[Model], None], stop: asyncio.Event
) -> None:
    """Follow the model topic from its beginning; call ``on_model`` with each
    version (the newest last). Waits for the topic if it does not exist yet."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTP

    topic = settings.topic(MODEL_TOPIC)
    failing = False  # one warning per outage, not one every 5 s
    while not stop.is_set():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.app_id}-model-feed",
        )
        try:
            await consumer.start()
            if topic not in await consumer.topics():
                await asyncio.wait_for(stop.wait(), timeout=5.0)
                continue
            tp = AioTP(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            if failing:
                logger.info("model feed: reading the model topic again")
                failing = False
            while not stop.is_set():
                batches: dict[Any, Any] = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        try:
                            on_model(Model.from_json(record.value))
                        except (KeyError, ValueError, TypeError, BgNbdError):
                            logger.exception(
                                "ignoring a malformed model at offset %d", record.offset
                            )
        except TimeoutError:
            continue
        except Exception as exc:  # a broker hiccup must not end the feed: retry
            if not failing:
                logger.warning("model feed: %s: %s; retrying every 5 s", type(exc).__name__, exc)
            failing = True
            await asyncio.sleep(5)
        finally:
            await consumer.stop()
