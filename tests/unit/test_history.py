"""Back-testing userpulse's own JSON Lines: what `userpulse produce` takes and a
`user-events` topic export, read by agents.files.jsonl in file order."""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.files.jsonl import JSONL, detect_jsonl, history_rows, jsonl_rows
from agents.files.jsonl_lines import READING_CODES
from agents.files.rows import MappedRow, ReadStats, Rejection, ReplayError
from streams.contract import REJECTION_CODES
from streams.datasets import Mapped
from streams.errors import EventError
from streams.events import parse_event

SIGNED_UP = {
    "event_id": "e-1",
    "type": "signed_up",
    "user_id": "u-1",
    "timestamp": "2024-05-01T09:00:00Z",
    "context": {"channel": "web"},
}
ADDED = {
    "event_id": "e-2",
    "type": "product_added",
    "user_id": "u-1",
    "timestamp": 1714554060000,
    "properties": {"product_id": "sku-42", "quantity": 1, "price": 19.9, "cart_id": "c-1"},
}
#: An hour *before* the first two, of another user: file order is kept.
VIEWED = {
    "event_id": "e-3",
    "type": "product_viewed",
    "anonymous_id": "anon-7",
    "timestamp": "2024-05-01T08:00:00.250+02:00",
    "properties": {"product_id": "sku-1"},
}
EVENTS = [SIGNED_UP, ADDED, VIEWED]
TIMES = [1714554000000, 1714554060000, 1714543200250]


def jsonl(*docs: Any) -> bytes:
    return b"".join((d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n" for d in docs)


def record(value: Any, partition: Any, offset: int, key: str | None = None, **more: Any) -> Any:
    if key is None and isinstance(value, dict):
        key = value.get("user_id") or value.get("anonymous_id")
    return {
        "topic": "user-events",
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value,
        **more,
    }


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def events(rows: Iterator[MappedRow]) -> list[tuple[int, dict[str, str], Mapped]]:
    """(line, row, mapped) of every accepted line; fails on a rejected one."""
    out = []
    for line, row, result in rows:
        assert not isinstance(result, EventError), f"line {line}: {result}"
        assert len(result) == 1
        out.append((line, dict(row), result[0]))
    return out


def rejections(rows: Iterator[MappedRow]) -> dict[int, Rejection]:
    """What the back-test reports for each rejected line (its --rejected line)."""
    return {
        line: Rejection(line, "map", result, row)
        for line, row, result in rows
        if isinstance(result, EventError)
    }


def valid(mapped: Mapped) -> Any:
    """The worker's validation, with the event's own time as "now" (as the back-test)."""
    event = parse_event(orjson.dumps(mapped.doc), now_ms=mapped.timestamp_ms + 1)
    assert event.timestamp_ms == mapped.timestamp_ms
    assert event.key == mapped.user_id
    return event


class Pipe(io.RawIOBase):
    """A non-seekable stdin, as from `cat file | userpulse backtest -`."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def pipe_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(Pipe(data))))


# ---- the produce format -------------------------------------------------------


def test_a_produce_file_gives_each_line_as_the_event_produce_would_send(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", jsonl(*EVENTS))
    stats = ReadStats()
    read = events(jsonl_rows(path, stats=stats))
    assert [line for line, _, _ in read] == [1, 2, 3]
    assert [m.doc for _, _, m in read] == EVENTS
    assert [row for _, row, _ in read] == [{}, {}, {}]
    assert [m.timestamp_ms for _, _, m in read] == TIMES
    assert [m.user_id for _, _, m in read] == ["u-1", "u-1", "anon-7"]
    assert [valid(m).type for _, _, m in read] == ["signed_up", "product_added", "product_viewed"]
    assert (stats.layout, stats.presorted, stats.rows) == (JSONL, True, 3)


def test_events_out_of_time_order_stay_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", jsonl(*EVENTS))
    times = [m.timestamp_ms for _, _, m in events(jsonl_rows(path))]
    assert times == TIMES and times != sorted(times)  # like a Kafka partition: not sorted


def test_blank_lines_crlf_and_a_bom_are_skipped_and_lines_keep_their_numbers(
    tmp_path: Path,
) -> None:
    data = b"\xef\xbb\xbf" + jsonl(SIGNED_UP).replace(b"\n", b"\r\n") + b"\n   \n"
    data += jsonl(ADDED) + b"\n"
    stats = ReadStats()
    read = events(jsonl_rows(write(tmp_path / "events.jsonl", data), stats=stats))
    assert [(line, m.doc["event_id"]) for line, _, m in read] == [(1, "e-1"), (4, "e-2")]
    assert stats.rows == 2  # blank lines are not rows


def test_bad_lines_are_rejected_with_the_reason_produce_gives_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    data = jsonl(SIGNED_UP, b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", ADDED)
    rows = list(jsonl_rows(write(tmp_path / "events.jsonl", data)))
    assert [line for line, _, result in rows if not isinstance(result, EventError)] == [1, 6]
    seen = {line: orjson.loads(r.to_json()) for line, r in rejections(iter(rows)).items()}
    assert {line: doc["code"] for line, doc in seen.items()} == {
        2: "not_json",
        3: "not_object",
        4: "not_object",
        5: "invalid_utf8",
    }
    assert seen[2]["message"].startswith("not valid JSON")
    assert seen[3]["message"] == "expected a JSON object, got an array"
    assert seen[2]["row"] == {"input": "{not json"}
    assert seen[5]["row"] == {"input": "\\xff\\xfe{}"}


def test_an_invalid_event_is_left_to_the_contract_check_with_its_own_code(
    tmp_path: Path,
) -> None:
    no_id = {k: v for k, v in ADDED.items() if k != "event_id"}
    zoneless = {**VIEWED, "timestamp": "2024-05-01 08:00:00"}
    path = write(tmp_path / "events.jsonl", jsonl(SIGNED_UP, no_id, zoneless))
    read = events(jsonl_rows(path))
    codes = []
    for _, _, m in read[1:]:
        with pytest.raises(EventError) as error:
            valid(m)
        codes.append(error.value.code)
    assert codes == ["missing_field", "bad_timestamp"]
    assert read[2][2].timestamp_ms == 0  # unreadable: never mistaken for a real time


def test_a_record_line_in_a_file_of_events_is_rejected_naming_the_mix(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", jsonl(SIGNED_UP, record(ADDED, 0, 1)))
    (rejection,) = rejections(jsonl_rows(path)).values()
    assert (rejection.error.code, rejection.error.path) == ("unknown_field", "$.value")
    assert "this line is a topic record, but the file is one of events" in str(rejection.error)


# ---- a topic export -----------------------------------------------------------


def test_a_topic_export_gives_the_values_in_file_order_with_their_source(tmp_path: Path) -> None:
    lines = [
        record(SIGNED_UP, 3, 17),
        record(VIEWED, 0, 5, headers={"trace": "x"}),  # other fields are ignored
        record(orjson.dumps(ADDED).decode(), 3, 18, key="u-1"),  # the value as text
    ]
    stats = ReadStats()
    read = events(jsonl_rows(write(tmp_path / "export.jsonl", jsonl(*lines)), stats=stats))
    assert [m.doc for _, _, m in read] == [SIGNED_UP, VIEWED, ADDED]
    assert [row for _, row, _ in read] == [
        {"topic": "user-events", "partition": "3", "offset": "17", "key": "u-1"},
        {"topic": "user-events", "partition": "0", "offset": "5", "key": "anon-7"},
        {"topic": "user-events", "partition": "3", "offset": "18", "key": "u-1"},
    ]
    assert [m.timestamp_ms for _, _, m in read] == [TIMES[0], TIMES[2], TIMES[1]]
    assert [valid(m).event_id for _, _, m in read] == ["e-1", "e-3", "e-2"]
    assert (stats.layout, stats.rows) == (JSONL, 3)


def test_userpulse_tail_output_compacted_by_jq_is_a_topic_export(tmp_path: Path) -> None:
    # `userpulse tail user-events | jq -c .`: partition, offset, value; no topic, no key
    lines = [
        {"partition": 1, "offset": 0, "value": SIGNED_UP},
        {"partition": 1, "offset": 1, "value": ADDED},
    ]
    read = events(jsonl_rows(write(tmp_path / "tail.jsonl", jsonl(*lines))))
    assert [row for _, row, _ in read] == [
        {"partition": "1", "offset": "0"},
        {"partition": "1", "offset": "1"},
    ]
    assert [m.doc for _, _, m in read] == [SIGNED_UP, ADDED]


def test_each_partition_must_be_in_offset_order_and_is_rejected_otherwise(
    tmp_path: Path,
) -> None:
    lines = [
        record(SIGNED_UP, 0, 10),
        record(VIEWED, 1, 3),  # another partition: its own order
        record(ADDED, 0, 12),  # a gap is fine (compaction, transaction markers)
        record(ADDED, 0, 12),  # the same record again
        record(SIGNED_UP, 0, 11),  # behind
        record(VIEWED, 1, 4),
    ]
    rows = list(jsonl_rows(write(tmp_path / "export.jsonl", jsonl(*lines))))
    assert [line for line, _, result in rows if not isinstance(result, EventError)] == [1, 2, 3, 6]
    bad = rejections(iter(rows))
    assert {line: r.error.code for line, r in bad.items()} == {4: "offset_order", 5: "offset_order"}
    assert bad[4].error.message == (
        "offset 12 of partition 0 of user-events repeats offset 12 (line 3): a topic export "
        "lists each partition's records once, in offset order"
    )
    assert "offset 11 of partition 0 of user-events comes after offset 12 (line 3)" in str(
        bad[5].error
    )
    assert bad[5].row["offset"] == "11"  # where it came from, in the rejected file


def test_bad_records_are_rejected_with_a_reason_naming_the_field(tmp_path: Path) -> None:
    lines = [
        record(SIGNED_UP, 0, 0),
        {"topic": "user-events", "partition": 0, "offset": 1, "key": "u-1"},
        record(None, 0, 2, key="u-1"),
        record([SIGNED_UP], 0, 3),
        record("{oops", 0, 4, key="u-1"),
        {"topic": "user-events", "offset": 5, "value": ADDED},
        record(ADDED, "0", 6),
        record(ADDED, 0, 7, key="someone-else"),
        ADDED,  # an event line in an export
    ]
    bad = rejections(jsonl_rows(write(tmp_path / "export.jsonl", jsonl(*lines))))
    seen = {line: (r.error.code, r.error.path, r.error.message) for line, r in bad.items()}
    assert seen == {
        2: ("missing_field", "$.value", "a topic record needs value, the event: it has no value"),
        3: (
            "missing_field",
            "$.value",
            "a topic record needs value, the event: its value is null (a tombstone)",
        ),
        4: (
            "not_object",
            "$.value",
            "value must be the event, a JSON object (or a string holding one), got an array",
        ),
        5: ("not_json", "$.value", seen[5][2]),
        6: (
            "missing_field",
            "$.partition",
            "a topic record needs partition: the record's partition number in the topic",
        ),
        7: ("wrong_type", "$.partition", 'partition must be a whole number ≥ 0, got a string "0"'),
        8: (
            "key_mismatch",
            "$.user_id",
            "record key 'someone-else' must equal the user_id (or anonymous_id) 'u-1'",
        ),
        9: ("missing_field", "$.value", seen[9][2]),
    }
    assert seen[5][2].startswith("value is a string that is not JSON")
    assert seen[9][2].startswith("this line is an event, but the file is a topic export")
    assert orjson.loads(bad[8].to_json())["row"] == {
        "topic": "user-events",
        "partition": "0",
        "offset": "7",
        "key": "someone-else",
        "input": orjson.dumps(lines[7]).decode(),
    }


def test_a_wrong_key_on_an_invalid_event_keeps_the_events_own_rejection(tmp_path: Path) -> None:
    no_type = {k: v for k, v in ADDED.items() if k != "type"}
    path = write(tmp_path / "export.jsonl", jsonl(record(no_type, 0, 0, key="x")))
    ((_, row, mapped),) = events(jsonl_rows(path))  # the worker checks the key after parsing
    assert row["key"] == "x"
    with pytest.raises(EventError, match=r"missing_field at \$\.type"):
        valid(mapped)


# ---- files, gzip, stdin ---------------------------------------------------------


def test_gzip_and_plain_files_read_the_same(tmp_path: Path) -> None:
    data = jsonl(*EVENTS)
    plain = [m.doc for _, _, m in events(jsonl_rows(write(tmp_path / "e.jsonl", data)))]
    packed = [m.doc for _, _, m in events(jsonl_rows(write(tmp_path / "e.jsonl.gz", data)))]
    assert plain == packed == EVENTS


def test_a_pipe_on_stdin_is_detected_without_being_consumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe_stdin(monkeypatch, gzip.compress(b"\n" + jsonl(*EVENTS)))
    assert detect_jsonl("-")
    read = events(history_rows("-"))
    assert [(line, m.doc) for line, _, m in read] == [(2, SIGNED_UP), (3, ADDED), (4, VIEWED)]


def test_a_csv_on_stdin_still_reaches_the_csv_reader_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    csv = b"timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n"
    pipe_stdin(monkeypatch, csv)
    assert not detect_jsonl("-")
    stats = ReadStats()
    ((line, _, result),) = list(history_rows("-", stats=stats))
    assert (line, stats.layout) == (2, "retailrocket")
    assert not isinstance(result, EventError)


def test_a_seekable_stdin_is_rewound_after_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    # what click's test runner (and some shells' redirections) give: a BytesIO
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(jsonl(*EVENTS))))
    assert detect_jsonl("-")
    assert [m.doc for _, _, m in events(jsonl_rows("-"))] == EVENTS


def test_detection_looks_at_the_first_non_blank_character(tmp_path: Path) -> None:
    assert detect_jsonl(write(tmp_path / "a.jsonl", b"\xef\xbb\xbf\n \n" + jsonl(SIGNED_UP)))
    assert detect_jsonl(write(tmp_path / "b.jsonl.gz", jsonl(record(SIGNED_UP, 0, 0))))
    assert not detect_jsonl(write(tmp_path / "rees.csv", b"event_time,event_type,product_id\n"))
    assert not detect_jsonl(write(tmp_path / "quoted.csv", b'"event_time","event_type"\n'))
    assert not detect_jsonl(write(tmp_path / "empty.jsonl", b""))
    assert not detect_jsonl(tmp_path / "missing.jsonl")


def test_history_rows_picks_the_reader_by_layout(tmp_path: Path) -> None:
    path = write(tmp_path / "events.txt", jsonl(*EVENTS))
    for layout in ("auto", "jsonl"):
        stats = ReadStats()
        assert len(events(history_rows(path, layout, stats=stats))) == 3
        assert stats.layout == JSONL
    csv = write(tmp_path / "rr.csv", b"timestamp,visitorid,event,itemid,transactionid\n")
    stats = ReadStats()
    assert list(history_rows(csv, stats=stats)) == []
    assert stats.layout == "retailrocket"


def test_limit_counts_non_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", b"\n" + jsonl(*EVENTS))
    assert [line for line, _, _ in events(jsonl_rows(path, limit=2))] == [2, 3]
    assert list(jsonl_rows(path, limit=0)) == []


def test_unreadable_or_wrong_input_stops_with_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"cannot read .*missing\.jsonl"):
        list(jsonl_rows(tmp_path / "missing.jsonl"))
    with pytest.raises(ReplayError, match="is empty: expected JSON Lines"):
        list(jsonl_rows(write(tmp_path / "blank.jsonl", b"\n\n")))
    csv = write(tmp_path / "rees.csv", b"event_time,event_type\n2019-10-01 00:00:00 UTC,view\n")
    with pytest.raises(ReplayError, match=r"line 1 is not a JSON object .* use --layout auto"):
        list(jsonl_rows(csv))
    truncated = write(tmp_path / "cut.jsonl.gz", jsonl(*EVENTS * 50))
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(ReplayError, match=r"cannot read .*cut\.jsonl\.gz after line"):
        list(jsonl_rows(truncated))
    with pytest.raises(ReplayError, match="--no-presorted does not apply to JSON Lines"):
        list(jsonl_rows(write(tmp_path / "e.jsonl", jsonl(*EVENTS)), presorted=False))


def test_every_code_of_a_rejected_line_is_the_contracts_or_documented(tmp_path: Path) -> None:
    lines = [b"{", b"[]", record(SIGNED_UP, 0, 1), record(None, 0, 2), record(ADDED, 0, 1)]
    bad = rejections(jsonl_rows(write(tmp_path / "mixed.jsonl", jsonl(*lines))))
    codes = {r.error.code for r in bad.values()}
    assert codes == {"not_json", "not_object", "missing_field", "offset_order"}
    assert codes <= set(REJECTION_CODES) | set(READING_CODES)
    docs = (Path(__file__).parents[2] / "docs" / "replay.md").read_text()
    section = docs.split("## Back-testing JSON Lines")[1].split("\n## ")[0]
    assert all(f"`{code}`" in section for code in READING_CODES)
