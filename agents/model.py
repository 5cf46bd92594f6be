"""The churn model's adapter: `userpulse fit` and the workers' model feed.

`userpulse fit` reads every user's state from the state table's changelog
topic (compacted: the latest state per user), summarises each buyer as
(x, t_x, T), fits the BG/NBD population parameters (r, α, a, b) by maximum
likelihood (:func:`streams.bgnbd.fit`) and publishes them to the compacted
model topic ``userpulse.model``. Every worker follows that topic from its
beginning (no consumer group, so every worker sees every version) and uses
the newest parameters for P(alive) churn warnings and the profile's
expected purchases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.admin import admin_client
from agents.errors import InfrastructureError, UserpulseError
from agents.settings import Settings
from streams.bgnbd import (
    BgNbdError,
    BgNbdParams,
    FitResult,
    expected_next_purchase_days,
    expected_purchases,
    fit,
    p_alive,
    p_alive_at_ms,
    summary,
)
from streams.errors import StateError
from streams.policy import DAY_MS
from streams.state import STAGE_ERASED, UserState, decode_state
from streams.timed import PAliveAt

logger = logging.getLogger(__name__)

MODEL_TOPIC = "userpulse.model"
MODEL_KEY = b"bgnbd"


@dataclass(frozen=True)
class Model:
    """Fitted parameters, the unit they were fitted in, and their provenance."""

    params: BgNbdParams
    unit_days: float
    fitted_at_ms: int
    buyers: int
    log_likelihood: float

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
    fields: dict[str, str] = {}
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


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog ``{app id}-{table}-changelog``."""
    return f"{settings.app_id}-user-state-changelog"


def read_states(settings: Settings, timeout_s: float = 600.0) -> Iterator[UserState]:
    """Every user's latest state, read from the changelog up to its current end."""
    topic = changelog_topic(settings)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            client_id="userpulse-fit",
        )
    except (KafkaError, OSError) as exc:
        raise InfrastructureError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.__class__.__name__})"
        ) from None
    try:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise UserpulseError(
                f"no state changelog {topic!r}: has a worker with USERPULSE_APP_ID="
                f"{settings.app_id} run yet?"
            )
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        latest: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise InfrastructureError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if record.key is not None:
                        latest[record.key] = record.value
    finally:
        consumer.close()
    for raw in latest.values():
        if raw is None:
            continue
        try:
            state = decode_state(raw)
        except StateError:
            continue
        if state.stage != STAGE_ERASED:
            yield state


def fit_states(
    states: Iterator[UserState], now_ms: int, unit_days: float, min_buyers: int
) -> tuple[FitResult, int]:
    data = [
        s
        for s in (
            summary(st.first_order_ms, st.last_order_ms, st.order_count, now_ms, unit_days)
            for st in states
        )
        if s is not None
    ]
    if len(data) < min_buyers:
        raise UserpulseError(
            f"only {len(data)} buyers in the state; the fit needs at least {min_buyers} "
            "(lower --min-buyers to fit anyway)"
        )
    try:
        return fit(data), len(data)
    except BgNbdError as exc:
        raise UserpulseError(f"the BG/NBD fit failed: {exc}") from None


def degenerate(params: BgNbdParams) -> bool:
    """A parameter far outside any plausible range: the data could not pin it
    down (e.g. a, b → ∞ when every buyer seems to drop out alike)."""
    values = (params.r, params.alpha, params.a, params.b)
    return max(values) > 1e4 or min(values) < 1e-4


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


@click.command("fit")
@click.option("--unit-days", type=float, default=7.0, show_default=True, help="Model time unit.")
@click.option("--min-buyers", type=int, default=200, show_default=True, help="Fewer: refuse.")
@click.option("--publish/--no-publish", default=True, show_default=True, help="Send to workers.")
@click.option("--force", is_flag=True, help="Publish even when the fit did not converge.")
def fit_command(unit_days: float, min_buyers: int, publish: bool, force: bool) -> None:
    """Fit the BG/NBD churn model on every user's state and publish it to the workers."""
    try:
        settings = Settings.from_env()
        started = time.monotonic()
        click.echo(f"reading states from {changelog_topic(settings)} …", err=True)
        now = time.time_ns() // 1_000_000
        result, buyers = fit_states(read_states(settings), now, unit_days, min_buyers)
        p = result.params
        click.echo(
            f"BG/NBD fitted on {buyers} buyers in {time.monotonic() - started:.1f} s "
            f"(unit {unit_days:g} days, converged: {result.converged})\n"
            f"  r = {p.r:.4f}   alpha = {p.alpha:.4f}   a = {p.a:.4f}   b = {p.b:.4f}\n"
            f"  log-likelihood = {result.log_likelihood:.2f}"
        )
        if degenerate(p) and publish and not force:
            raise UserpulseError(
                "the fit is degenerate (a parameter ran off towards 0 or infinity: too few "
                "buyers or too short a history to tell them apart); nothing was published. "
                "Fit again with more data, or publish anyway with --force"
            )
        if publish:
            publish_model(settings, Model(p, unit_days, now, buyers, result.log_likelihood))
            click.echo(f"published to {settings.topic(MODEL_TOPIC)}; workers use it from now on")
    except UserpulseError as exc:
        click.secho(f"userpulse: error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
