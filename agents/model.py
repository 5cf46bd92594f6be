"""The churn model's adapter: the fitted model as the workers use it.

`userpulse fit` (:mod:`agents.fit`) publishes BG/NBD parameters to the
compacted model topic ``userpulse.model``. Every worker follows that topic
from its beginning (:func:`follow_model`: no consumer group, so every worker
sees every version) and uses the newest parameters for P(alive) churn
warnings (:func:`model_p_alive_at`) and the profile's expected purchases
(:func:`model_fields`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.admin import admin_client
from agents.errors import InfrastructureError
from agents.settings import Settings
from streams.bgnbd import (
    BgNbdError,
    BgNbdParams,
    expected_next_purchase_days,
    expected_purchases,
    p_alive,
    p_alive_at_ms,
    summary,
)
from streams.policy import DAY_MS
from streams.state import UserState
from streams.timed import PAliveAt

logger = logging.getLogger(__name__)

MODEL_TOPIC = "userpulse.model"
MODEL_KEY = b"bgnbd"

#: Where a fit's as-of time came from, as `userpulse fit` prints and publishes it.
AS_OF_OPTION = "--as-of"
AS_OF_STREAM = "stream time"
AS_OF_WALL = "wall clock"


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
        return cls(
            BgNbdParams(doc["r"], doc["alpha"], doc["a"], doc["b"]),
            float(doc["unit_days"]),
            int(doc["fitted_at"]),
            int(doc["buyers"]),
            float(doc["log_likelihood"]),
            int(doc.get("as_of", doc["fitted_at"])),  # older models: as of their fit
            str(doc.get("as_of_source", AS_OF_WALL)),
        )


def model_p_alive_at(params: BgNbdParams, unit_days: float) -> PAliveAt:
    """P(alive) under fitted BG/NBD parameters, as a worker computes it once
    ``userpulse fit`` published a model (docs/churn-model.md). A value the
    series cannot give (:class:`~streams.bgnbd.BgNbdError`) is no answer."""

    def p_alive_at(state: UserState, at_ms: int) -> float | None:
        try:
            return p_alive_at_ms(
                params,
                state.first_order_ms,
                state.last_order_ms,
                state.order_count,
                at_ms,
                unit_days,
            )
        except BgNbdError:
            return None

    return p_alive_at


def model_fields(model: Model | None, state: UserState) -> dict[str, str]:
    """The profile fields the churn model adds: P(alive), expected orders in
    30 days and the expected next order (empty without a model or orders).
    Each number stands on its own: one that does not converge is left out."""
    if model is None:
        return {}
    data = summary(
        state.first_order_ms, state.last_order_ms, state.order_count,
        state.evaluated_ms or state.last_seen_ms, model.unit_days,
    )  # fmt: skip
    if data is None:
        return {}
    x, t_x, age = data
    params, unit = model.params, model.unit_days
    fields: dict[str, str] = {"model_as_of": str(model.as_of_ms or model.fitted_at_ms)}
    with contextlib.suppress(BgNbdError):
        fields["p_alive"] = f"{p_alive(params, x, t_x, age):.4f}"
    with contextlib.suppress(BgNbdError):
        expected = expected_purchases(params, 30 / unit, x, t_x, age)
        fields["expected_orders_30d"] = f"{expected:.4f}"
    with contextlib.suppress(BgNbdError):
        days = expected_next_purchase_days(params, x, t_x, age, unit)
        if days is not None:
            at = (state.evaluated_ms or state.last_seen_ms) + int(days * DAY_MS)
            fields["expected_next_order"] = str(at)
    return fields


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
        except Exception:  # a broker hiccup must not end the feed: retry
            logger.exception("model feed: retrying in 5 s")
            await asyncio.sleep(5)
        finally:
            await consumer.stop()
