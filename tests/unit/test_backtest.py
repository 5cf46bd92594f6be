"""The back-test: the pipeline's decisions on stream time, in memory — hand-made
events, a generated REES46 file, and the command. No Kafka, no Redis."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from agents.backtest.file import backtest_file
from agents.backtest.report import CSV_COLUMNS, TRIGGER_TYPES, BacktestProgress
from agents.backtest.run import backtest
from agents.commands.backtest import backtest_command
from agents.commands.options import parse_time
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
from streams.triggers import Trigger, decide_on_event
from streams.userstate import UserState

T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z
S = 1000
MIN = 60 * S
H = 3_600_000
POLICY = Policy(
    cart=CartPolicy(reminder_delays_s=(60, 3600, 7200)),
    activation=ActivationPolicy(stalled_after_s=()),
    churn=ChurnPolicy(inactivity_s=2 * 3600),
    delivery=DeliveryPolicy(quiet_hours=(), daily_cap=0),
)
#: the same without the churn rule, for tests that let hours pass
NO_CHURN = Policy(
    cart=POLICY.cart,
    activation=POLICY.activation,
    churn=ChurnPolicy(inactivity_s=0),
    delivery=POLICY.delivery,
)


class Events:
    """Hand-made events with ids e1, e2, …"""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, user: str, etype: str, at_ms: int, **props: Any) -> Events:
        n = len(self.events) + 1
        self.events.append(
            Event(f"e{n}", etype, at_ms, user_id=user, properties=props, context={"channel": "web"})
        )
        return self

    def cart(self, user: str, at_ms: int, cart: str = "c1", price: float = 10.0) -> Events:
        return self.add(
            user, "product_added", at_ms, product_id="p1", quantity=1, price=price, cart_id=cart
        )

    def order(self, user: str, at_ms: int, cart: str = "c1", revenue: float = 10.0) -> Events:
        return self.add(
            user,
            "order_completed",
            at_ms,
            order_id=f"o-{at_ms}",
            revenue=revenue,
            currency="EUR",
            products=[],
            cart_id=cart,
        )


def of_type(triggers: Any, kind: str, user: str | None = None) -> list[Trigger]:
    return [t for t in triggers if t.type == kind and (user is None or t.user_id == user)]


# ---------------------------------------------------------------------------
# (a) hand-made events


def test_a_cart_left_alone_gets_the_reminder_sequence_at_the_policy_delays() -> None:
    # user b's events move stream time on; a's reminders fire as it passes them
    events = Events().cart("a", T0).add("b", "page_viewed", T0 + 10 * MIN)
    events.add("b", "page_viewed", T0 + 3 * H)
    report = backtest(events.events, NO_CHURN)
    reminders = of_type(report.triggers, "cart_abandoned")
    assert [(t.user_id, t.payload["step"], t.occurred_at_ms) for t in reminders] == [
        ("a", 1, T0 + 60 * S),
        ("a", 2, T0 + H),
        ("a", 3, T0 + 2 * H),
    ]
    assert [t.payload["since_last_change_s"] for t in reminders] == [60, 3600, 7200]
    assert all(
        t.payload["value"] == 10.0 and t.topic == "triggers.cart-abandonment" for t in reminders
    )
    assert len({t.trigger_id for t in reminders}) == 3
    # each user's decisions follow its own time: occurred_at never goes back
    for user in ("a", "b"):
        times = [t.occurred_at_ms for t in report.triggers if t.user_id == user]
        assert times == sorted(times)
    summary = report.by_type["cart_abandoned"]
    assert (summary.count, summary.users, summary.first_ms, summary.last_ms) == (
        3,
        1,
        T0 + 60 * S,
        T0 + 2 * H,
    )
    assert summary.per_day == {"2023-11-15": 3} and summary.top_users == (("a", 3),)


def test_timers_fire_on_stream_time_only_up_to_the_last_event_or_until() -> None:
    events = Events().cart("a", T0).events
    alone = backtest(events, NO_CHURN)
    assert of_type(alone.triggers, "cart_abandoned") == []  # stream time never passed a deadline
    assert alone.pending_deadlines == 1 and alone.end_ms == T0
    later = backtest(events, NO_CHURN, until_ms=T0 + H)
    assert [t.payload["step"] for t in of_type(later.triggers, "cart_abandoned")] == [1, 2]
    assert later.end_ms == T0 + H


def test_until_stops_reading_events_after_it() -> None:
    events = Events().cart("a", T0).order("a", T0 + 2 * H).events
    report = backtest(events, NO_CHURN, until_ms=T0 + H + 1)
    assert report.events == 1
    assert [t.payload["step"] for t in of_type(report.triggers, "cart_abandoned")] == [1, 2]


def test_an_order_before_the_deadline_sends_no_reminder() -> None:
    events = Events().cart("a", T0).order("a", T0 + 30 * S)
    report = backtest(events.events, NO_CHURN, until_ms=T0 + 30 * 86_400_000)
    assert of_type(report.triggers, "cart_abandoned") == []
    assert report.by_type["cart_abandoned"].count == 0
    stages = [(t.reason["rule"], t.reason["to"]) for t in of_type(report.triggers, "stage_changed")]
    assert stages == [("first_seen", "activated"), ("first_order", "monetized")]


def test_an_order_between_reminders_stops_the_sequence() -> None:
    events = Events().cart("a", T0).order("a", T0 + 30 * MIN)
    report = backtest(events.events, NO_CHURN, until_ms=T0 + 86_400_000)
    assert [t.payload["step"] for t in of_type(report.triggers, "cart_abandoned")] == [1]


def test_a_churn_warning_after_inactivity_then_win_back_when_the_user_returns() -> None:
    events = Events().add("a", "page_viewed", T0).add("b", "page_viewed", T0 + 3 * H)
    events.add("a", "page_viewed", T0 + 4 * H)
    report = backtest(events.events, POLICY)
    [warning] = of_type(report.triggers, "churn_warning", "a")
    assert warning.occurred_at_ms == T0 + 2 * H  # at the deadline, before b's event
    assert warning.reason == {"rule": "fixed_inactivity", "last_seen": T0, "inactive_s": 7200}
    assert warning.payload["delivery"]["deferred_ms"] == 0
    [back] = of_type(report.triggers, "win_back", "a")
    assert back.occurred_at_ms == T0 + 4 * H
    assert back.reason["warned_at"] == T0 + 2 * H and back.reason["gone_s"] == 4 * 3600
    assert back.payload["gone_days"] == round(4 / 24, 2)
    assert report.triggers.index(warning) < report.triggers.index(back)
    # b was warned too, but only after its own two quiet hours: past the end of the stream
    assert of_type(report.triggers, "churn_warning", "b") == []


def test_erasure_drops_the_state_and_is_acknowledged() -> None:
    events = Events().cart("a", T0).add("a", "user_deleted", T0 + S).events
    report = backtest(events, NO_CHURN, until_ms=T0 + 10 * H)
    [erased] = of_type(report.triggers, "user_erased")
    assert erased.profile == {} and erased.occurred_at_ms == T0 + S
    assert of_type(report.triggers, "cart_abandoned") == []  # the cart went with the user
    assert report.users == 0 and report.peak_users == 1 and report.pending_deadlines == 0


def test_a_redelivered_event_counts_once() -> None:
    events = Events().cart("a", T0).events
    report = backtest([*events, events[0]], NO_CHURN)
    assert report.events == 2 and report.duplicates == 1
    assert len(of_type(report.triggers, "stage_changed")) == 1  # first seen: once


def test_identity_and_referral_are_applied_in_process() -> None:
    anon = Event("x1", "page_viewed", T0, anonymous_id="anon-1")
    identified = Event("x2", "user_identified", T0 + S, user_id="u", anonymous_id="anon-1")
    after = Event("x3", "page_viewed", T0 + 2 * S, anonymous_id="anon-1")
    referred = Event("x4", "signed_up", T0 + 3 * S, user_id="v", properties={"referrer_id": "u"})
    report = backtest([anon, identified, after, referred], NO_CHURN)
    assert report.forwarded == 1  # anon-1's later event went to u
    stages = [(t.user_id, t.reason["to"]) for t in of_type(report.triggers, "stage_changed")]
    assert ("u", "referrer") in stages  # v's sign-up credited u at once
    assert report.by_type["stage_changed"].users == 3  # anon-1, u, v


def test_a_merged_anonymous_id_gets_no_reminders_of_its_own() -> None:
    added = Event(
        "x1",
        "product_added",
        T0,
        anonymous_id="anon-1",
        properties={"product_id": "p1", "quantity": 1, "price": 5.0, "cart_id": "c"},
    )
    identified = Event("x2", "user_identified", T0 + S, user_id="u", anonymous_id="anon-1")
    report = backtest([added, identified], NO_CHURN, until_ms=T0 + 3 * H)
    assert {t.user_id for t in of_type(report.triggers, "cart_abandoned")} == {"u"}


#: CDNOW's weekly BG/NBD parameters (Fader, Hardie & Lee 2005)
CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_a_fitted_churn_model_turns_the_p_alive_rule_on() -> None:
    events = Events()
    for k, day in enumerate((0, 3, 6, 9)):
        events.order("a", T0 + day * 86_400_000, cart=f"c{k}", revenue=50.0)
    policy = Policy(churn=ChurnPolicy(inactivity_s=0, p_alive_threshold=0.3))
    until = T0 + 400 * 86_400_000
    without = backtest(events.events, policy, until_ms=until)
    assert of_type(without.triggers, "churn_warning") == []
    model = ChurnModel(CDNOW, 7.0)
    [warning] = of_type(
        backtest(events.events, policy, until_ms=until, churn_model=model).triggers,
        "churn_warning",
    )
    assert warning.reason["rule"] == "bgnbd_p_alive" and warning.reason["p_alive"] < 0.3
    assert warning.occurred_at_ms > T0 + 9 * 86_400_000


def per_user_run(events: list[Event], policy: Policy, end_ms: int) -> set[str]:
    """Each user on its own, as tests/unit/test_timed.py drives one user."""
    states: dict[str, UserState | None] = defaultdict(lambda: None)
    ids: set[str] = set()
    for event in events:
        caught, timed = run_until(states[event.key], event.timestamp_ms - 1, policy)
        new = apply(caught, event, policy)
        states[event.key] = new
        fired = [*timed, *decide_on_event(caught, new, event), *win_back(caught, new, event)]
        ids |= {t.trigger_id for t in fired}
    for state in states.values():
        ids |= {t.trigger_id for t in run_until(state, end_ms, policy)[1]}
    return ids


def test_the_global_timer_index_gives_the_same_triggers_as_each_user_on_its_own() -> None:
    rng = random.Random(3)
    events = Events()
    at = T0
    for _ in range(300):
        at += rng.randrange(0, 40 * MIN)
        user = f"u{rng.randrange(8)}"
        kind = rng.choice(["view", "view", "cart", "cart", "order", "remove"])
        if kind == "view":
            events.add(user, "page_viewed", at)
        elif kind == "cart":
            events.cart(user, at, cart=f"c-{user}", price=rng.choice([5.0, 20.0, 300.0]))
        elif kind == "order":
            events.order(user, at, cart=f"c-{user}", revenue=rng.choice([20.0, 300.0]))
        else:
            events.add(
                user,
                "product_removed",
                at,
                product_id="p1",
                quantity=1,
                price=5.0,
                cart_id=f"c-{user}",
            )
    report = backtest(events.events, POLICY, until_ms=at + 5 * H)
    ids = [t.trigger_id for t in report.triggers]
    assert len(ids) == len(set(ids)) == report.trigger_count
    assert set(ids) == per_user_run(events.events, POLICY, at + 5 * H)
    assert report.by_type["cart_abandoned"].count > 5 and report.by_type["churn_warning"].count > 0


# ---------------------------------------------------------------------------
# (b) a generated REES46 file

REES46_HEADER = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
Product = tuple[str, str, str, str, float]
PRODUCTS: list[Product] = [
    ("1004767", "2053013555631882655", "electronics.smartphone", "samsung", 254.82),
    ("5100816", "2053013553375346967", "", "xiaomi", 29.51),
    ("1307310", "2053013558920217191", "computers.notebook", "acer", 411.83),
    ("3601530", "2053013563810775923", "appliances.kitchen.washer", "lg", 130.76),
    ("26400672", "2053013563651392361", "", "lucente", 92.67),
    ("12703498", "2053013553559896355", "", "cordiant", 34.75),
]


def rees46_rows(users: int = 12, days: int = 6, seed: int = 46) -> list[dict[str, str]]:
    """A deterministic REES46-layout month in miniature: sessions of views,
    carts that are bought, emptied or left alone, over ``days`` days."""
    rng = random.Random(seed)
    start = datetime(2019, 10, 1, tzinfo=UTC)
    rows: list[tuple[datetime, dict[str, str]]] = []

    def row(at: datetime, kind: str, product: Product, user: str, session: str) -> datetime:
        at += timedelta(seconds=rng.randrange(5, 600))
        pid, category, code, brand, price = product
        values = (
            at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            kind,
            pid,
            category,
            code,
            brand,
            f"{price:.2f}",
            user,
            session,
        )
        rows.append((at, dict(zip(REES46_HEADER, values, strict=True))))
        return at

    for u in range(users):
        user = str(512_000_000 + u * 7919)
        for s in range(rng.randrange(2, 6)):
            at = start + timedelta(seconds=rng.randrange(days * 86_400))
            session = f"{user}-s{s}"
            for product in rng.sample(PRODUCTS, rng.randrange(1, 5)):
                at = row(at, "view", product, user, session)
                if rng.random() < 0.3:
                    at = row(at, "view", product, user, session)
            carted = rng.sample(PRODUCTS, rng.randrange(0, 3))
            for product in carted:
                at = row(at, "cart", product, user, session)
            outcome = rng.random()
            if carted and outcome < 0.4:
                for product in carted:
                    at = row(at, "purchase", product, user, session)
            elif carted and outcome < 0.55:
                for product in carted:
                    at = row(at, "remove_from_cart", product, user, session)
    rows.sort(key=lambda item: item[0])
    return [r for _, r in rows]


def write_rees46(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, REES46_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rees46(tmp_path_factory.mktemp("rees46") / "2019-Oct-sample.csv", rees46_rows())


def test_the_generated_sample_is_what_the_test_needs(sample: Path) -> None:
    with sample.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kinds = Counter(r["event_type"] for r in rows)
    assert 150 <= len(rows) <= 600
    assert kinds["cart"] and kinds["purchase"] and kinds["remove_from_cart"]
    assert len({r["user_id"] for r in rows}) == 12
    assert len({r["event_time"][:10] for r in rows}) >= 5


def test_two_backtests_of_a_file_give_the_same_trigger_ids_and_counts(
    sample: Path, tmp_path: Path
) -> None:
    first = backtest_file(sample, csv_path=tmp_path / "one.csv", keep_triggers=True)
    second = backtest_file(sample, csv_path=tmp_path / "two.csv", keep_triggers=True)
    assert first.layout == "rees46" and first.rejected == 0 and first.events > first.rows
    assert [t.trigger_id for t in first.triggers] == [t.trigger_id for t in second.triggers]
    assert first.trigger_ids_sha256 == second.trigger_ids_sha256
    assert {k: s.count for k, s in first.by_type.items()} == {
        k: s.count for k, s in second.by_type.items()
    }
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert first.by_type["cart_abandoned"].count > 0
    assert first.by_type["stage_changed"].users == 12
    assert first.peak_users == 12 and first.state_bytes > 12 * 200


def test_the_csv_has_one_row_per_trigger(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "triggers.csv"
    report = backtest_file(sample, csv_path=out, keep_triggers=True)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == report.trigger_count == sum(s.count for s in report.by_type.values())
    assert [r["trigger_id"] for r in rows] == [t.trigger_id for t in report.triggers]
    cart = next(r for r in rows if r["type"] == "cart_abandoned")
    assert cart["rule"] == "cart_reminder_sequence" and cart["step"] == "1"
    assert float(cart["cart_value"]) > 0 and int(cart["cart_items"]) >= 1
    assert cart["deliverable"] == "false"  # REES46 carries no consent: flagged
    assert cart["occurred_at"].endswith("Z")
    assert {r["type"] for r in rows} <= set(TRIGGER_TYPES)


def test_a_policy_changes_what_would_fire(sample: Path) -> None:
    defaults = backtest_file(sample)
    no_reminders = backtest_file(sample, Policy(cart=CartPolicy(reminder_delays_s=())))
    assert defaults.by_type["cart_abandoned"].count > 0
    assert no_reminders.by_type["cart_abandoned"].count == 0
    assert no_reminders.by_type["stage_changed"].count == defaults.by_type["stage_changed"].count


def test_a_retailrocket_file_is_sorted_in_memory_and_back_tested(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433224214164,257597,view,355908,\n"
        "1433221332117,257597,addtocart,248676,\n"  # earlier than the line above
        "1433230000000,992329,addtocart,1,\n"
        "1433231000000,992329,transaction,1,4000\n"
        "1433300000000,111,view,5,\n",
        encoding="utf-8",
    )
    report = backtest_file(path, keep_triggers=True)
    assert (report.layout, report.presorted, report.events) == ("retailrocket", False, 5)
    [reminder] = of_type(report.triggers, "cart_abandoned")
    assert reminder.user_id == "257597" and reminder.occurred_at_ms == 1433221332117 + H


def test_limit_and_progress(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.backtest.file.PROGRESS_INTERVAL_S", 0.0)  # report at every chance
    seen: list[BacktestProgress] = []
    report = backtest_file(sample, limit=50, progress=seen.append)
    assert report.rows == 50 and 50 <= report.events <= 100
    assert seen and seen[-1].phase == "done"
    assert (seen[-1].rows, seen[-1].events, seen[-1].triggers) == (
        50,
        report.events,
        report.trigger_count,
    )


def test_until_takes_epoch_ms_or_iso_8601() -> None:
    assert parse_time("1700006400000") == T0
    assert parse_time("2023-11-15T00:00:00Z") == T0
    assert parse_time("2023-11-15T01:00:00+01:00") == T0
    assert parse_time("2023-11-15") == T0  # no zone: UTC
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_a_backtest_touches_no_kafka_and_no_redis(sample: Path) -> None:
    code = (
        "import sys; from agents.backtest.file import backtest_file; "
        f"backtest_file({str(sample)!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'kafka', 'aiokafka', 'faust', 'redis', 'mode'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# (c) the command


def test_the_command_prints_the_per_type_table(sample: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[cart]\nreminder_delays_s = [1800, 7200]\n", encoding="utf-8")
    out = tmp_path / "triggers.csv"
    result = CliRunner().invoke(
        backtest_command,
        [str(sample), "--policy", str(policy), "--csv", str(out), "--until", "2019-10-10"],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "back-test of" in text and f"policy: {policy}" in text
    header = next(line for line in text.splitlines() if line.startswith("type "))
    assert header.split() == [
        "type",
        "topic",
        "count",
        "users",
        "first",
        "occurred_at",
        "last",
        "occurred_at",
    ]
    for trigger_type in TRIGGER_TYPES:
        assert any(line.startswith(trigger_type + " ") for line in text.splitlines())
    assert "per day (UTC)" in text and "top users" in text
    assert "timers run to 2019-10-10T00:00:00.000Z" in text
    with out.open(encoding="utf-8") as f:
        assert sum(1 for _ in f) > 1


def test_a_bad_policy_file_exits_2_naming_the_key(sample: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[cart]\nreminder_delays_s = [7200, 1800]\n", encoding="utf-8")
    result = CliRunner().invoke(backtest_command, [str(sample), "--policy", str(policy)])
    assert result.exit_code == 2
    assert "userpulse: error: cart.reminder_delays_s" in result.stderr
    assert "back-test of" not in result.stdout


def test_the_command_takes_a_churn_model(sample: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text(
        '{"model": "bgnbd", "r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "unit_days": 7}'
    )
    policy = tmp_path / "policy.toml"
    policy.write_text("[churn]\ninactivity_s = 0\n", encoding="utf-8")
    out = tmp_path / "triggers.csv"
    args = [str(sample), "--policy", str(policy), "--until", "2019-12-31", "--csv", str(out)]
    result = CliRunner().invoke(backtest_command, [*args, "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert f"churn model: {model}" in result.stdout
    with out.open(encoding="utf-8", newline="") as f:
        rules = {r["rule"] for r in csv.DictReader(f) if r["type"] == "churn_warning"}
    assert rules == {"bgnbd_p_alive"}
    model.write_text('{"r": 0.243, "alpha": -1, "a": 0.793, "b": 2.426}')
    bad = CliRunner().invoke(backtest_command, [*args, "--model", str(model)])
    assert bad.exit_code == 2 and "userpulse: error: --model" in bad.stderr


def test_a_missing_policy_file_and_a_bad_until_exit_2(sample: Path, tmp_path: Path) -> None:
    missing = CliRunner().invoke(
        backtest_command, [str(sample), "--policy", str(tmp_path / "nope.toml")]
    )
    assert missing.exit_code == 2 and "userpulse: error: --policy" in missing.stderr
    bad_until = CliRunner().invoke(backtest_command, [str(sample), "--until", "soon"])
    assert bad_until.exit_code == 2 and "ISO-8601" in bad_until.stderr


def test_unsorted_presorted_input_exits_2_with_the_fix(tmp_path: Path) -> None:
    rows = rees46_rows(users=3, days=2)
    path = write_rees46(tmp_path / "unsorted.csv", list(reversed(rows)))
    result = CliRunner().invoke(backtest_command, [str(path)])
    assert result.exit_code == 2 and "--no-presorted" in result.stderr
    sorted_in_memory = CliRunner().invoke(backtest_command, [str(path), "--no-presorted"])
    assert sorted_in_memory.exit_code == 0, sorted_in_memory.output


# ---------------------------------------------------------------------------
# (c) JSON Lines in file order, fed user by user


def _history(users: int = 6) -> list[Event]:
    events = Events()
    for k in range(users):
        user = f"jl{k}"
        start = T0 + k * 7 * MIN
        events.add(user, "session_started", start)
        events.cart(user, start + MIN)
        if k % 2:
            events.order(user, start + 90 * MIN)  # between reminders 2 and 3
        events.add(user, "page_viewed", start + 5 * H)  # after every reminder and the churn time
    return events.events


def _write_jsonl(path: Path, events: list[Event]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e.to_dict()) + b"\n" for e in events))
    return path


def test_json_lines_fed_user_by_user_back_test_like_the_time_sorted_history(
    tmp_path: Path,
) -> None:
    events = _history()
    by_user = sorted(events, key=lambda e: e.user_id or "")  # stable: each user's order kept
    by_time = sorted(events, key=lambda e: e.timestamp_ms)
    assert by_user != by_time  # the file order really is out of time order across users
    user_file = _write_jsonl(tmp_path / "by-user.jsonl", by_user)
    time_file = _write_jsonl(tmp_path / "by-time.jsonl", by_time)
    a = backtest_file(user_file, POLICY, keep_triggers=True)
    b = backtest_file(time_file, POLICY, keep_triggers=True)
    assert (a.layout, a.events, a.rejected) == ("jsonl", len(events), 0)
    assert sorted(t.trigger_id for t in a.triggers) == sorted(t.trigger_id for t in b.triggers)
    assert {t.trigger_id: t.payload for t in a.triggers} == {
        t.trigger_id: t.payload for t in b.triggers
    }
    reminders = of_type(a.triggers, "cart_abandoned")
    # buyers (odd users) got two reminders, the others three; nobody is warned after
    # an order that came later in time but earlier in the file
    assert sorted(len(of_type(reminders, "cart_abandoned", f"jl{k}")) for k in range(6)) == [
        2, 2, 2, 3, 3, 3,
    ]  # fmt: skip
    for k in range(6):
        warned = of_type(a.triggers, "churn_warning", f"jl{k}")
        assert [t.occurred_at_ms for t in warned] == [T0 + k * 7 * MIN + 2 * H + (
            90 * MIN if k % 2 else MIN
        )]  # fmt: skip


def test_a_back_test_on_partitions_keeps_each_partitions_own_stream_time() -> None:
    events = _history()
    one = backtest(events, POLICY, partitions=1)
    eight = backtest(events, POLICY, partitions=8)
    assert one.events == eight.events == len(events)
    # what fires on eight partitions fires on one too, identically; one stream time
    # over all the history reaches further, so a partition-wise run can only have less
    ones = {t.trigger_id: t for t in one.triggers}
    assert all(ones[t.trigger_id] == t for t in eight.triggers)
    last_seen = {e.user_id: e.timestamp_ms for e in events}
    for t in one.triggers:  # everything up to a user's own last event is on both
        if t.occurred_at_ms <= last_seen[t.user_id]:
            assert t in eight.triggers


def test_a_bad_json_line_is_rejected_with_its_line_and_the_rest_is_run(tmp_path: Path) -> None:
    events = _history(2)
    path = tmp_path / "mixed.jsonl"
    lines = [orjson.dumps(e.to_dict()) for e in events]
    lines.insert(2, b'{"event_id": "x", "type": "page_viewed"}')  # no user, no time
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = backtest_file(path, POLICY)
    assert report.events == len(events) and report.rejected == 1
    [example] = report.examples
    assert example.line == 3 and example.error.code == "missing_field"


def test_a_wall_clock_makes_the_back_test_reject_the_future_as_a_worker_does() -> None:
    from agents.backtest.run import Backtest
    from streams.contract import Limits

    def event_at(n: int, ts: int) -> bytes:
        return orjson.dumps(
            {"event_id": f"w-{n}", "type": "page_viewed", "timestamp": ts, "user_id": "u1"}
        )

    wall = 1_767_225_600_000
    day = 86_400_000
    inputs = [event_at(1, wall - day), event_at(2, wall + 60_000), event_at(3, wall + day)]
    history = Backtest()  # no wall clock: nothing is in the future
    clocked = Backtest(now_ms=wall, limits=Limits(max_future_skew_ms=300_000))
    rejected: list[str] = []
    clocked.on_dead_letter = lambda letter, _origin: rejected.append(letter.error.code)
    for raw in inputs:
        history.feed_raw(b"u1", raw)
        clocked.feed_raw(b"u1", raw, origin="x")
    history.finish()
    clocked.finish()
    assert history.dead_letters == 0 and history.events == 3
    assert clocked.events == 2 and rejected == ["future_timestamp"]
