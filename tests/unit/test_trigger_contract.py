"""The trigger contract: real triggers of every type, built by the core, match
streams/schemas/trigger.schema.json and docs/triggers.md — and the schema,
the docs and the core agree on which types exist."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from streams import activation, cart, churn, triggers
from streams.bgnbd import BgNbdParams
from streams.churn import ChurnModel, win_back
from streams.events import Event
from streams.policy import (
    ActivationPolicy,
    CartPolicy,
    ChurnPolicy,
    DeliveryPolicy,
    Policy,
)
from streams.state import apply
from streams.timed import run_until
from streams.triggers import Trigger, decide_on_event, encode_trigger
from streams.userstate import UserState

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "streams" / "schemas" / "trigger.schema.json"
DOC = ROOT / "docs" / "triggers.md"
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
DAY = 86_400_000
#: seconds-scale delays: the timed triggers fire within minutes of stream time
SHORT = Policy(
    cart=CartPolicy(reminder_delays_s=(5, 30)),
    activation=ActivationPolicy(stalled_after_s=(10,)),
    churn=ChurnPolicy(inactivity_s=120),
    delivery=DeliveryPolicy(quiet_hours=(), daily_cap=0),
)
#: the defaults, with quiet hours and a daily cap (what the doc's examples show)
DEFAULTS = Policy()


class Driver:
    """One user through the core, the way the worker drives it."""

    def __init__(self, user: str, policy: Policy, **context: Any) -> None:
        self.user = user
        self.policy = policy
        self.context = {"channel": "web", **context}
        self.state: UserState | None = None
        self.fired: list[Trigger] = []
        self.n = 0

    def on(self, etype: str, at_ms: int, **props: Any) -> None:
        self.n += 1
        event = Event(
            f"{self.user}-e{self.n}",
            etype,
            at_ms,
            user_id=self.user,
            properties=props,
            context=self.context,
        )
        caught, fired = run_until(self.state, at_ms - 1, self.policy)
        new = apply(caught, event, self.policy)
        self.fired += [*fired, *decide_on_event(caught, new, event), *win_back(caught, new, event)]
        self.state = new

    def until(self, at_ms: int, churn_model: ChurnModel | None = None) -> None:
        self.state, fired = run_until(self.state, at_ms, self.policy, churn_model)
        self.fired += fired


def scenario(policy: Policy) -> list[Trigger]:
    """A few users whose histories produce every trigger type (and both churn rules)."""
    a = Driver("u-1001", policy, timezone="Europe/Paris")
    a.on("signed_up", T0, method="email")
    a.on("consent_updated", T0 + 60_000, channels={"email": True})
    a.on("product_added", T0 + 120_000, product_id="sku-42", quantity=2, price=19.9, cart_id="c-7")
    a.on("checkout_started", T0 + 180_000, cart_id="c-7")
    reminded = T0 + 180_000 + policy.cart.reminder_delays_s[-1] * 1000
    a.until(reminded)
    a.on("order_completed", reminded + DAY, order_id="o-1", revenue=250.0, currency="EUR",
         products=[{"product_id": "sku-42", "quantity": 2, "price": 19.9}], cart_id="c-7")  # fmt: skip
    a.until(reminded + DAY + policy.churn.inactivity_s * 1000 + 40 * DAY)
    a.on("session_started", T0 + 90 * DAY, session_id="s-9")
    a.on("user_deleted", T0 + 91 * DAY)

    b = Driver("u-1002", policy)  # signed up, never activated
    night = T0 + 13 * 3_600_000  # 23:00 UTC: with quiet hours the nudges wait until 08:00
    b.on("signed_up", night, method="google")
    b.on("page_viewed", night + 60_000, path="/pricing")
    b.until(night + policy.activation.stalled_after_s[-1] * 1000 + DAY)

    c = Driver("u-1003", replace(policy, churn=ChurnPolicy(inactivity_s=0)))  # the model rule
    for k, day in enumerate((0, 20, 45)):
        c.on("order_completed", T0 + day * DAY, order_id=f"o-3{k}", revenue=400.0,
             currency="EUR", products=[])  # fmt: skip
    c.until(T0 + 200 * DAY, CDNOW)
    return [*a.fired, *b.fired, *c.fired]


#: the BG/NBD estimates of Fader, Hardie & Lee (2005) for CDNOW, in weeks
CDNOW = ChurnModel(BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426), unit_days=7.0)


def doc(trigger: Trigger) -> dict[str, Any]:
    """The trigger as a consumer reads it off the topic."""
    loaded: dict[str, Any] = orjson.loads(
        encode_trigger(trigger, emitted_at_ms=trigger.occurred_at_ms + 150)
    )
    return loaded


def core_types() -> set[str]:
    """Every trigger type the core defines (the TYPE_* constants)."""
    return {
        value
        for module in (triggers, cart, activation, churn)
        for name, value in vars(module).items()
        if name.startswith("TYPE_") and isinstance(value, str)
    }


SCHEMA_TYPES = set(SCHEMA["properties"]["type"]["enum"])
SHORT_TRIGGERS = scenario(SHORT)
DEFAULT_TRIGGERS = scenario(DEFAULTS)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_scenario_produces_every_type_and_both_churn_rules() -> None:
    for fired in (SHORT_TRIGGERS, DEFAULT_TRIGGERS):
        assert {t.type for t in fired} == core_types()
        rules = {t.reason["rule"] for t in fired if t.type == "churn_warning"}
        assert rules == {"fixed_inactivity", "bgnbd_p_alive"}


def test_the_schema_enum_is_exactly_the_core_types() -> None:
    assert core_types() == SCHEMA_TYPES


@pytest.mark.parametrize(
    "trigger",
    [*SHORT_TRIGGERS, *DEFAULT_TRIGGERS],
    ids=lambda t: f"{t.type}-{t.user_id}-{t.occurred_at_ms}",
)
def test_every_real_trigger_matches_the_schema(trigger: Trigger) -> None:
    assert [e.message for e in VALIDATOR.iter_errors(doc(trigger))] == []


def test_the_schema_rejects_a_trigger_missing_its_payload_fields() -> None:
    cart = next(doc(t) for t in SHORT_TRIGGERS if t.type == "cart_abandoned")
    del cart["payload"]["step"]
    assert not VALIDATOR.is_valid(cart)
    churn = next(doc(t) for t in SHORT_TRIGGERS if t.type == "churn_warning")
    del churn["payload"]["delivery"]
    assert not VALIDATOR.is_valid(churn)
    stage = next(doc(t) for t in SHORT_TRIGGERS if t.type == "stage_changed")
    stage["type"] = "stage_changd"
    assert not VALIDATOR.is_valid(stage)
    erased = next(doc(t) for t in SHORT_TRIGGERS if t.type == "user_erased")
    erased["profile"] = {"stage": "acquired"}  # no personal data after erasure
    assert not VALIDATOR.is_valid(erased)


def test_topics_are_what_the_doc_says() -> None:
    text = DOC.read_text(encoding="utf-8")
    for t in SHORT_TRIGGERS:
        section = text.split(f"## `{t.topic}`", 1)
        assert len(section) == 2, f"docs/triggers.md has no section for {t.topic}"
        assert f"`{t.type}`" in section[1].split("\n## ", 1)[0]


def _fields(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from _fields(item)


def test_the_doc_mentions_every_type_and_field() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing: set[str] = set()
    for t in SHORT_TRIGGERS:
        d = doc(t)
        names = {t.type, *d, *_fields(d["payload"]), *_fields(d["reason"]), *d["profile"]}
        missing |= {n for n in names if f"`{n}`" not in text}
    assert missing == set()


def _doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [json.loads(b) for b in blocks if '"trigger_id"' in b]


def test_the_doc_examples_are_valid_triggers_of_every_type() -> None:
    examples = _doc_examples()
    assert {e["type"] for e in examples} == SCHEMA_TYPES
    for example in examples:
        assert [e.message for e in VALIDATOR.iter_errors(example)] == [], example["type"]


def test_the_doc_examples_are_what_the_core_produces() -> None:
    """The examples are real: each equals a trigger of the scenario (defaults)."""
    produced = {t.trigger_id: doc(t) for t in DEFAULT_TRIGGERS}
    for example in _doc_examples():
        assert example == produced.get(example["trigger_id"]), example["type"]


def test_trigger_ids_are_deterministic_across_runs() -> None:
    again = scenario(SHORT)
    assert [t.trigger_id for t in again] == [t.trigger_id for t in SHORT_TRIGGERS]
    assert len({t.trigger_id for t in SHORT_TRIGGERS}) == len(SHORT_TRIGGERS)


# ---- the example consumer (docs/examples/notification_consumer.py) ----------------
def _consumer_module() -> Any:
    path = ROOT / "docs" / "examples" / "notification_consumer.py"
    spec = importlib.util.spec_from_file_location("notification_consumer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_consumer_sends_once_and_never_without_consent() -> None:
    consumer = _consumer_module()
    seen = consumer.MemorySeenIds()
    sent: list[str] = []
    records = [doc(t) for t in DEFAULT_TRIGGERS]
    first = [consumer.handle(r, seen, sent.append) for r in records]
    again = [consumer.handle(r, seen, sent.append) for r in records]  # a redelivery
    outcomes = dict(zip([r["trigger_id"] for r in records], first, strict=True))
    for record in records:
        delivery = record["payload"].get("delivery")
        if delivery is not None and not delivery["deliverable"]:
            assert outcomes[record["trigger_id"]] == "not_deliverable"
    assert first.count("sent") == len(sent) >= 4  # cart reminders, a churn warning, …
    assert "duplicate" not in first and again.count("duplicate") == len(sent)
    assert any("your cart (2× sku-42, 39.80)" in message for message in sent)


def test_the_example_consumers_memory_cache_forgets_after_its_ttl() -> None:
    consumer = _consumer_module()
    now = [0.0]
    seen = consumer.MemorySeenIds(ttl_s=60, max_size=2, clock=lambda: now[0])
    assert seen.claim("a") and not seen.claim("a")
    now[0] = 61
    assert seen.claim("a")  # expired: claimed again
    assert seen.claim("b") and seen.claim("c")  # three ids, room for two: "a" goes
    assert not seen.claim("c")
    assert seen.claim("a")  # bounded: an evicted id counts as new
    seen.release("a")
    assert seen.claim("a")
