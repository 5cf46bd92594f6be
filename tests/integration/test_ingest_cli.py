"""`userpulse produce` and `userpulse dlq` against real Kafka: what is
published is the input line byte for byte, rejections are reported with their
line, dead letters can be read, exported, fixed and published again."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from agents.commands.dlq import dlq_group
from agents.commands.produce import Rejection, produce_command, produce_lines
from agents.kafka.admin import ensure_topics
from agents.kafka.deadletters import dead_letter_headers
from agents.kafka.reader import Record, collect
from agents.settings import Settings
from agents.stack.network import free_port
from streams import topics
from streams.errors import EventError

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_line(event_id: str, user_id: str, timestamp: int, **extra: object) -> bytes:
    doc = {"event_id": event_id, "type": "page_viewed", "user_id": user_id, "timestamp": timestamp}
    return orjson.dumps({**doc, **extra})


def user_events(settings: Settings, count: int) -> list[Record]:
    records = collect(
        settings.kafka_bootstrap,
        [settings.topic(topics.USER_EVENTS)],
        lambda rs: len(rs) >= count,
        timeout_s=20,
    )
    assert len(records) == count
    return records


def put_dead_letter(
    producer: KafkaProducer,
    settings: Settings,
    *,
    key: bytes,
    value: bytes,
    code: str,
    path: str,
    message: str,
    source_offset: int,
    partition: int,
    timestamp_ms: int,
) -> None:
    """A dead letter as the worker writes it (its headers: agents.kafka.deadletters)."""
    error = EventError(code, path, message)
    headers = dead_letter_headers(error, settings.topic(topics.USER_EVENTS), 3, source_offset)
    producer.send(
        settings.topic(topics.DEAD_LETTERS),
        key=key,
        value=value,
        headers=headers,
        partition=partition,
        timestamp_ms=timestamp_ms,
    )


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_produce_lines_sends_each_valid_line_untouched_keyed_by_user(settings: Settings) -> None:
    ensure_topics(settings)
    t = now_ms()
    spaced = (
        b'{ "event_id": "e1",  "type": "page_viewed", "user_id": "alice", "timestamp": %d }' % t
    )
    anonymous = (
        b'{"event_id":"e2","type":"session_started","anonymous_id":"anon-7","timestamp":%d}' % t
    )
    lines = [
        spaced + b"\r\n",  # 1: sent without its \r\n, spaces kept
        b"   \n",  # 2: blank, skipped
        event_line("e3", "bob", 1_700_000_000) + b"\n",  # 3: epoch seconds
        b"not json\n",  # 4
        anonymous + b"\n",  # 5: keyed by anonymous_id
        b'{"event_id":"e4","type":"page_viewed","user_id":"\xff","timestamp":1}\n',  # 6
        event_line("e5", "carol", t),  # 7: last line without a newline
    ]
    rejected: list[Rejection] = []

    report = produce_lines(settings, lines, rejected.append)

    assert (report.lines, report.blank, report.sent, report.rejected) == (7, 1, 3, 3)
    assert report.exit_code == 1
    by_key = {r.key: r.value for r in user_events(settings, 3)}
    assert by_key == {
        b"alice": spaced,
        b"anon-7": anonymous,
        b"carol": event_line("e5", "carol", t),
    }
    assert [(r.line, r.error.code, r.error.path) for r in rejected] == [
        (3, "bad_timestamp", "$.timestamp"),
        (4, "not_json", "$"),
        (6, "invalid_utf8", "$"),
    ]
    entry = orjson.loads(rejected[1].to_json())
    assert entry == {"line": 4, "error": rejected[1].error.as_dict(), "input": "not json"}
    assert orjson.loads(rejected[2].to_json())["input"].startswith('{"event_id":"e4"')


def test_produce_exits_0_when_all_are_sent_and_1_with_a_rejected_file(
    settings: Settings, runner: CliRunner, tmp_path: Path
) -> None:
    ensure_topics(settings)
    t = now_ms()
    good = tmp_path / "good.jsonl"
    good.write_bytes(event_line("g1", "alice", t) + b"\n\n" + event_line("g2", "bob", t) + b"\n")

    result = runner.invoke(produce_command, [str(good)], env=settings.to_env())

    assert result.exit_code == 0, result.output
    assert "sent 2, rejected 0" in result.stdout
    assert not (tmp_path / "good.rejected.jsonl").exists()

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        event_line("m1", "carol", t) + b"\n" + event_line("m2", "dave", 1_700_000_000) + b"\n"
    )
    result = runner.invoke(produce_command, [str(mixed)], env=settings.to_env())

    assert result.exit_code == 1, result.output
    assert "sent 1, rejected 1" in result.stdout
    assert "line 2: bad_timestamp at $.timestamp" in result.stderr
    (entry,) = [
        orjson.loads(x) for x in (tmp_path / "mixed.rejected.jsonl").read_bytes().splitlines()
    ]
    assert entry["line"] == 2
    assert entry["error"]["code"] == "bad_timestamp"
    assert entry["input"] == event_line("m2", "dave", 1_700_000_000).decode()

    # stdin, with the rejected file where --rejected says
    elsewhere = tmp_path / "out" / "bad.jsonl"
    elsewhere.parent.mkdir()
    result = runner.invoke(
        produce_command,
        ["-", "--rejected", str(elsewhere)],
        input=b"[1, 2]\n",
        env=settings.to_env(),
    )
    assert result.exit_code == 1, result.output
    assert orjson.loads(elsewhere.read_bytes())["error"]["code"] == "not_object"
    assert sorted(r.key for r in user_events(settings, 3)) == [b"alice", b"bob", b"carol"]


def test_dlq_show_and_export_then_fix_and_produce_again(
    settings: Settings, runner: CliRunner, tmp_path: Path
) -> None:
    ensure_topics(settings)
    epoch_seconds = event_line("d1", "bob", 1_700_000_000)
    wrong_key = event_line("d2", "dave", now_ms())
    t0 = now_ms() - 10_000
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        # partition order (2, 0, 1) is not time order: show and export sort by time
        put_dead_letter(
            producer,
            settings,
            key=b"bob",
            value=epoch_seconds,
            code="bad_timestamp",
            path="$.timestamp",
            message="timestamp 1700000000 looks like epoch seconds",
            source_offset=18211,
            partition=2,
            timestamp_ms=t0,
        )
        put_dead_letter(
            producer,
            settings,
            key=b"x",
            value=b"\xff\xfe\x1b[31m",
            code="invalid_utf8",
            path="$",
            message="record is not valid UTF-8",
            source_offset=18212,
            partition=0,
            timestamp_ms=t0 + 1,
        )
        put_dead_letter(
            producer,
            settings,
            key=b"carol",
            value=wrong_key,
            code="key_mismatch",
            path="$.user_id",
            message="record key 'carol' must equal the user_id 'dave'",
            source_offset=18213,
            partition=1,
            timestamp_ms=t0 + 2,
        )
        producer.flush()
    finally:
        producer.close()
    env = settings.to_env()

    result = runner.invoke(dlq_group, ["show"], env=env)

    assert result.exit_code == 0, result.output
    out = result.stdout
    source = settings.topic(topics.USER_EVENTS)
    assert f"{source}[3]@18211" in out
    assert "bad_timestamp at $.timestamp: timestamp 1700000000 looks like epoch seconds" in out
    assert epoch_seconds.decode() in out
    assert "\\xff\\xfe\\x1b[31m" in out  # not UTF-8: escaped, and no raw ESC reaches the terminal
    assert "\x1b" not in out
    assert out.index("@18211") < out.index("@18212") < out.index("@18213")  # newest last
    assert "3 dead letters" in result.stderr

    result = runner.invoke(dlq_group, ["show", "--limit", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "@18213" in result.stdout
    assert "@18211" not in result.stdout

    fix = tmp_path / "fix.jsonl"
    result = runner.invoke(dlq_group, ["export", str(fix)], env=env)

    assert result.exit_code == 0, result.output
    assert fix.read_bytes() == epoch_seconds + b"\n" + wrong_key + b"\n"
    assert f"line 1: {source}[3]@18211 bad_timestamp" in result.stdout
    assert "skipped" in result.stderr and "not valid UTF-8" in result.stderr

    result = runner.invoke(dlq_group, ["export", str(fix), "--code", "bad_timestamp"], env=env)
    assert result.exit_code == 2  # never overwrites an edited file unasked
    result = runner.invoke(
        dlq_group, ["export", str(fix), "--code", "bad_timestamp", "--force"], env=env
    )
    assert result.exit_code == 0, result.output
    assert fix.read_bytes() == epoch_seconds + b"\n"

    # the operator fixes the line in an editor and publishes it
    fixed = epoch_seconds.replace(b"1700000000", b"1700000000000")
    fix.write_bytes(fixed + b"\n" + wrong_key + b"\n")  # the key_mismatch line needs no edit
    result = runner.invoke(produce_command, [str(fix)], env=env)

    assert result.exit_code == 0, result.output
    assert "sent 2, rejected 0" in result.stdout
    assert {r.key: r.value for r in user_events(settings, 2)} == {b"bob": fixed, b"dave": wrong_key}


def test_dlq_show_says_when_there_are_none(settings: Settings, runner: CliRunner) -> None:
    ensure_topics(settings)
    result = runner.invoke(dlq_group, ["show"], env=settings.to_env())
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no dead letters" in result.stderr


def test_an_unreachable_kafka_is_exit_2_with_one_line(
    settings: Settings, runner: CliRunner, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(event_line("u1", "alice", now_ms()) + b"\n")
    closed = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")

    started = time.monotonic()
    result = runner.invoke(produce_command, [str(events)], env=closed.to_env())

    assert time.monotonic() - started < 30
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("userpulse: error: cannot reach Kafka at 127.0.0.1:")
    assert "USERPULSE_KAFKA_BOOTSTRAP" in line
