"""REES46 and Retailrocket rows → userpulse events (streams.datasets), and the
event-time ordering `userpulse replay` relies on. Pure: no Kafka, no Redis."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agents.commands.replay import replay_command
from agents.commands.terminal import ProgressLine
from agents.files.datasets import mapped_rows
from agents.files.rows import ReplayError
from agents.kafka.replay import replay_file
from agents.settings import Settings
from streams.contract import REJECTION_CODES
from streams.datasets import (
    DATASET_CURRENCY,
    MAPPING_CODES,
    REES46,
    RETAILROCKET,
    Mapped,
    OrderError,
    Timed,
    check_layout,
    detect_layout,
    in_time_order,
    map_rows,
    parse_rees46_time,
    sorted_by_time,
)
from streams.errors import EventError
from streams.events import Event, parse_event

#: A pipeline clock far after the datasets' 2015 and 2019 timestamps.
NOW_MS = 2_000_000_000_000

REES46_HEADER = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]
RR_HEADER = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
SESSION_A = "72d76fde-8bb3-4e00-8c23-a032dfed738c"
SESSION_B = "9333dfbd-b87a-4708-9857-6336556b0fcc"


def rees(
    event_type: str = "view",
    *,
    time: str = "2019-10-01 00:00:00 UTC",
    user: str = "541312140",
    session: str = SESSION_A,
    price: str = "35.79",
    product: str = "44600062",
) -> dict[str, str]:
    return {
        "event_time": time,
        "event_type": event_type,
        "product_id": product,
        "category_id": "2103807459595387724",
        "category_code": "electronics.smartphone",
        "brand": "shiseido",
        "price": price,
        "user_id": user,
        "user_session": session,
    }


def rr(
    event: str = "view", *, ts: str = "1433221332117", visitor: str = "257597", **extra: str
) -> dict[str, str]:
    return {"timestamp": ts, "visitorid": visitor, "event": event, "itemid": "355908", **extra}


def mapped(layout: str, rows: list[dict[str, str]]) -> list[Mapped]:
    """Every event of ``rows``; fails on a rejected row."""
    out: list[Mapped] = []
    for line, result in map_rows(layout, rows):
        assert not isinstance(result, EventError), f"line {line}: {result}"
        out += result
    return out


def valid(m: Mapped) -> Event:
    """The pipeline's own validation of a mapped document."""
    event = parse_event(orjson.dumps(m.doc), now_ms=NOW_MS)
    assert event.key == m.user_id
    assert event.timestamp_ms == m.timestamp_ms
    return event


# ---- REES46 ------------------------------------------------------------------


def test_a_rees46_view_is_a_valid_product_viewed_with_the_catalogue_fields() -> None:
    session, view = mapped(REES46, [rees("view")])
    assert valid(session).type == "session_started"
    event = valid(view)
    assert event.type == "product_viewed"
    assert event.user_id == "541312140"
    assert event.timestamp_ms == 1_569_888_000_000  # 2019-10-01T00:00:00Z
    assert event.properties == {
        "product_id": "44600062",
        "price": 35.79,
        "category_id": "2103807459595387724",
        "category_code": "electronics.smartphone",
        "brand": "shiseido",
    }


def test_empty_catalogue_columns_are_left_out() -> None:
    row = {**rees("view"), "category_code": "", "brand": ""}
    _, view = mapped(REES46, [row])
    assert "brand" not in view.doc["properties"] and "category_code" not in view.doc["properties"]
    valid(view)


@pytest.mark.parametrize(
    ("event_type", "expected"), [("cart", "product_added"), ("remove_from_cart", "product_removed")]
)
def test_rees46_cart_changes_are_valid_cart_events_on_the_session_cart(
    event_type: str, expected: str
) -> None:
    _, event = mapped(REES46, [rees(event_type, price="33.20")])
    parsed = valid(event)
    assert parsed.type == expected
    assert parsed.properties == {
        "product_id": "44600062",
        "quantity": 1,
        "price": 33.2,
        "cart_id": SESSION_A,
    }


def test_a_rees46_remove_names_the_cart_of_the_users_latest_cart_row_whatever_the_session() -> None:
    rows = [
        rees("cart", session=SESSION_A, time="2019-10-01 10:00:00 UTC"),
        rees("remove_from_cart", session=SESSION_B, time="2019-10-02 09:00:00 UTC"),
        rees("remove_from_cart", user="2", session=SESSION_B, time="2019-10-02 09:00:01 UTC"),
    ]
    removes = [valid(m) for m in mapped(REES46, rows) if m.doc["type"] == "product_removed"]
    assert [(e.user_id, e.properties["cart_id"]) for e in removes] == [
        ("541312140", SESSION_A),  # the open cart, added to in the session before
        ("2", SESSION_B),  # no cart row before: its own session
    ]


def test_a_rees46_purchase_is_a_valid_one_line_order_that_closes_the_session_cart() -> None:
    _, event = mapped(REES46, [rees("purchase", price="33.20")])
    parsed = valid(event)
    assert parsed.type == "order_completed"
    props = dict(parsed.properties)
    assert props.pop("order_id").startswith(SESSION_A)
    assert props == {
        "revenue": 33.2,
        "currency": DATASET_CURRENCY,
        "products": [{"product_id": "44600062", "quantity": 1, "price": 33.2}],
        "cart_id": SESSION_A,
    }


def test_two_purchases_in_one_session_are_two_orders() -> None:
    events = mapped(REES46, [rees("purchase"), rees("purchase", product="1")])
    orders = [e.doc["properties"]["order_id"] for e in events if e.doc["type"] == "order_completed"]
    assert len(orders) == 2 and len(set(orders)) == 2


def test_an_empty_price_is_zero() -> None:
    _, view = mapped(REES46, [rees("view", price="")])
    assert valid(view).properties["price"] == 0.0


def test_rees46_times_are_exact_milliseconds_in_any_zone() -> None:
    assert parse_rees46_time("2019-10-01 00:00:00 UTC") == 1_569_888_000_000
    assert parse_rees46_time("2019-10-01 00:00:00.001 UTC") == 1_569_888_000_001
    assert parse_rees46_time("2019-10-01 02:00:00+02:00") == 1_569_888_000_000
    assert parse_rees46_time(" 2019-11-30 23:59:59 UTC ") == 1_575_158_399_000


# ---- sessions ---------------------------------------------------------------------


def test_a_session_started_comes_first_for_each_new_session_of_each_user() -> None:
    rows = [
        rees("view", user="1", session=SESSION_A, time="2019-10-01 00:00:00 UTC"),
        rees("view", user="2", session=SESSION_B, time="2019-10-01 00:00:01 UTC"),
        rees("cart", user="1", session=SESSION_A, time="2019-10-01 00:00:02 UTC"),
        rees("view", user="1", session=SESSION_B, time="2019-10-01 00:00:03 UTC"),
        rees("view", user="2", session=SESSION_B, time="2019-10-01 00:00:04 UTC"),
    ]
    events = mapped(REES46, rows)
    assert [(e.user_id, e.doc["type"]) for e in events] == [
        ("1", "session_started"),
        ("1", "product_viewed"),
        ("2", "session_started"),
        ("2", "product_viewed"),
        ("1", "product_added"),
        ("1", "session_started"),
        ("1", "product_viewed"),
        ("2", "product_viewed"),
    ]
    starts = [e for e in events if e.doc["type"] == "session_started"]
    assert [valid(s).properties["session_id"] for s in starts] == [SESSION_A, SESSION_B, SESSION_B]
    # a session starts at the time of its first row
    assert [s.timestamp_ms for s in starts] == [
        events[1].timestamp_ms,
        events[3].timestamp_ms,
        events[6].timestamp_ms,
    ]


def test_rows_without_a_session_share_one_per_user_session() -> None:
    events = mapped(REES46, [rees("view", session=""), rees("cart", session="")])
    assert [e.doc["type"] for e in events] == ["session_started", "product_viewed", "product_added"]
    assert events[2].doc["properties"]["cart_id"] == "nosession-541312140"
    for e in events:
        valid(e)


def test_a_rejected_row_does_not_swallow_the_session_start_of_the_next_row() -> None:
    results = list(map_rows(REES46, [rees("like"), rees("view")]))
    assert isinstance(results[0][1], EventError)
    second = results[1][1]
    assert not isinstance(second, EventError)
    assert [m.doc["type"] for m in second] == ["session_started", "product_viewed"]


# ---- Retailrocket --------------------------------------------------------------------


def test_a_retailrocket_view_is_a_valid_product_viewed() -> None:
    (event,) = mapped(RETAILROCKET, [rr("view")])
    parsed = valid(event)
    assert (parsed.type, parsed.user_id, parsed.timestamp_ms) == (
        "product_viewed",
        "257597",
        1433221332117,
    )
    assert parsed.properties == {"product_id": "355908"}


def test_a_retailrocket_addtocart_is_a_valid_product_added_on_the_visitor_cart() -> None:
    (event,) = mapped(RETAILROCKET, [rr("addtocart")])
    parsed = valid(event)
    assert parsed.type == "product_added"
    assert parsed.properties == {
        "product_id": "355908",
        "quantity": 1,
        "price": 0.0,
        "cart_id": "257597-cart",
    }


def test_a_retailrocket_transaction_is_a_valid_order_with_the_transaction_id() -> None:
    (event,) = mapped(RETAILROCKET, [rr("transaction", transactionid="4000")])
    parsed = valid(event)
    assert parsed.type == "order_completed"
    assert parsed.properties == {
        "order_id": "4000",
        "revenue": 0.0,
        "currency": DATASET_CURRENCY,
        "products": [{"product_id": "355908", "quantity": 1, "price": 0.0}],
        "cart_id": "257597-cart",
    }


def test_retailrocket_inserts_no_sessions() -> None:
    events = mapped(RETAILROCKET, [rr("view"), rr("view", ts="1433221332118")])
    assert [e.doc["type"] for e in events] == ["product_viewed", "product_viewed"]


# ---- deterministic event ids ---------------------------------------------------------------


def test_mapping_the_same_rows_twice_gives_identical_documents() -> None:
    rows = [rees("view"), rees("cart"), rees("purchase"), rees("view", user="2", session=SESSION_B)]
    first = [m.doc for m in mapped(REES46, rows)]
    again = [m.doc for m in mapped(REES46, [dict(r) for r in rows])]
    assert first == again
    assert orjson.dumps(first) == orjson.dumps(again)
    ids = [d["event_id"] for d in first]
    assert len(set(ids)) == len(ids)
    rr_rows = [rr("view"), rr("addtocart"), rr("transaction", transactionid="7")]
    assert [m.doc for m in mapped(RETAILROCKET, rr_rows)] == [
        m.doc for m in mapped(RETAILROCKET, rr_rows)
    ]


def test_event_ids_name_the_layout_and_line() -> None:
    session, view = mapped(REES46, [rees("view")])
    assert view.doc["event_id"].startswith("rees46-2-")
    assert session.doc["event_id"] == view.doc["event_id"] + "-s"
    (event,) = mapped(RETAILROCKET, [rr("view")])
    assert event.doc["event_id"].startswith("retailrocket-2-")


def test_the_same_line_of_another_file_gets_another_id() -> None:
    """The monthly REES46 files are replayed one after the other: line 2 of
    November must not be taken for a redelivery of line 2 of October."""
    october = mapped(REES46, [rees("view", time="2019-10-01 00:00:00 UTC")])
    november = mapped(REES46, [rees("view", time="2019-11-01 00:00:00 UTC")])
    assert {m.doc["event_id"] for m in october}.isdisjoint(m.doc["event_id"] for m in november)


# ---- bad rows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "code", "path"),
    [
        (rees("like"), "unknown_event_type", "$.event_type"),
        (rees("view", time="yesterday"), "bad_timestamp", "$.event_time"),
        (rees("view", time="2019-10-01 00:00:00"), "bad_timestamp", "$.event_time"),
        (rees("view", time=""), "missing_field", "$.event_time"),
        (rees("view", price="-0.01"), "bad_amount", "$.price"),
        (rees("view", price="nan"), "bad_amount", "$.price"),
        (rees("view", price="inf"), "bad_amount", "$.price"),
        (rees("view", price="12,50"), "wrong_type", "$.price"),
        (rees("view", user=""), "missing_field", "$.user_id"),
        ({k: v for k, v in rees("view").items() if k != "user_id"}, "missing_field", "$.user_id"),
        (rees("view", product=" "), "missing_field", "$.product_id"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_bad_rees46_row_is_an_event_error_and_the_next_row_still_maps(
    row: dict[str, str], code: str, path: str
) -> None:
    results = list(map_rows(REES46, [rees("view", user="9"), row, rees("cart", user="9")]))
    assert [line for line, _ in results] == [2, 3, 4]
    error = results[1][1]
    assert isinstance(error, EventError)
    assert (error.code, error.path) == (code, path)
    assert error.code in set(MAPPING_CODES) | set(REJECTION_CODES)
    assert not isinstance(results[0][1], EventError)
    assert not isinstance(results[2][1], EventError)


@pytest.mark.parametrize(
    ("row", "code", "path"),
    [
        (rr("like"), "unknown_event_type", "$.event"),
        (rr("view", ts="2015-06-02"), "bad_timestamp", "$.timestamp"),
        (
            rr("view", ts="１４３３２２１３３２１１７"),
            "bad_timestamp",
            "$.timestamp",
        ),  # full-width digits
        (rr("view", visitor=""), "missing_field", "$.visitorid"),
        (rr("transaction"), "missing_field", "$.transactionid"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_bad_retailrocket_row_is_an_event_error_and_the_next_row_still_maps(
    row: dict[str, str], code: str, path: str
) -> None:
    results = list(map_rows(RETAILROCKET, [row, rr("view")]))
    error = results[0][1]
    assert isinstance(error, EventError)
    assert (error.code, error.path) == (code, path)
    assert not isinstance(results[1][1], EventError)


def test_an_implausible_price_maps_but_the_pipeline_rejects_it() -> None:
    """The mapping checks what it must; the contract's limits stay the contract's."""
    _, view = mapped(REES46, [rees("view", price="1e13")])
    with pytest.raises(EventError) as caught:
        valid(view)
    assert caught.value.code == "bad_amount"


# ---- layouts ------------------------------------------------------------------------


def test_detect_layout_recognises_both_headers() -> None:
    assert detect_layout(REES46_HEADER) == REES46
    assert detect_layout(RR_HEADER) == RETAILROCKET
    assert detect_layout(["\ufeffevent_time", *REES46_HEADER[1:], "extra"]) == REES46
    assert detect_layout([f" {c} " for c in reversed(RR_HEADER)]) == RETAILROCKET


def test_an_unknown_header_is_an_event_error_naming_the_expected_columns() -> None:
    with pytest.raises(EventError) as caught:
        detect_layout(["user", "time", "action"])
    assert caught.value.code == "unknown_layout"
    assert "event_time" in caught.value.message and "visitorid" in caught.value.message
    with pytest.raises(EventError):
        detect_layout(REES46_HEADER[:-1])  # user_session is missing


def test_check_layout_names_the_missing_columns() -> None:
    check_layout(REES46, REES46_HEADER)
    with pytest.raises(EventError, match="event, itemid"):
        check_layout(RETAILROCKET, ["timestamp", "visitorid", "transactionid"])
    with pytest.raises(EventError, match="unknown layout"):
        check_layout("amazon", RR_HEADER)


# ---- event-time order -----------------------------------------------------------------


def timed(*stamps: int) -> list[Timed[str]]:
    return [Timed(ts, line, f"row{line}") for line, ts in enumerate(stamps, start=2)]


def test_sorted_input_streams_through_unchanged() -> None:
    items = timed(1, 2, 2, 5, 9)
    assert list(in_time_order(items, 0)) == items
    assert list(in_time_order(items, 1000)) == items


def test_rows_late_within_the_lateness_are_put_in_time_then_line_order() -> None:
    items = timed(1000, 3000, 2000, 3000, 2500, 6000)
    out = list(in_time_order(items, 1000))
    assert [(t.timestamp_ms, t.line) for t in out] == [
        (1000, 2),
        (2000, 4),
        (2500, 6),
        (3000, 3),
        (3000, 5),
        (6000, 7),
    ]


def test_a_row_later_than_the_lateness_stops_with_both_lines_named() -> None:
    items = timed(1_000, 10_000, 8_999)
    with pytest.raises(OrderError) as caught:
        list(in_time_order(items, 1_000))
    assert (caught.value.late.line, caught.value.latest.line) == (4, 3)
    assert "line 4" in str(caught.value) and "line 3" in str(caught.value)
    assert "1.001 s earlier" in str(caught.value)
    assert [t.line for t in in_time_order(items, 1_001)] == [2, 4, 3]


def test_ordering_streams_with_a_bounded_buffer() -> None:
    endless = (Timed(ts, ts, None) for ts in itertools.count(1_000, 10))
    first = list(itertools.islice(in_time_order(endless, 100), 5))
    assert [t.timestamp_ms for t in first] == [1_000, 1_010, 1_020, 1_030, 1_040]


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=60), st.integers(0, 20))
def test_ordering_is_the_sorted_input_or_an_order_error(stamps: list[int], lateness: int) -> None:
    items = timed(*stamps)
    too_late = any(ts < max(stamps[:i], default=ts) - lateness for i, ts in enumerate(stamps))
    if too_late:
        with pytest.raises(OrderError):
            list(in_time_order(items, lateness))
    else:
        assert list(in_time_order(items, lateness)) == sorted_by_time(items)


def test_sorting_in_memory_orders_by_time_then_line() -> None:
    items = timed(5, 1, 5, 0)
    assert [t.line for t in sorted_by_time(items)] == [5, 3, 2, 4]


# ---- reading files as replay does (agents.files.datasets.mapped_rows; no Kafka) -------------


def write_csv(path: Path, header: list[str], rows: Sequence[Mapping[str, str]]) -> Path:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


#: Retailrocket's events.csv is not sorted by time; nor is this.
UNSORTED_RR = [
    rr("view", ts="1433224214164", visitor="1"),
    rr("view", ts="1433221332117", visitor="2"),
    rr("addtocart", ts="1433221999827", visitor="1"),
    rr("view", ts="not-a-time", visitor="3"),
    rr("transaction", ts="1433221332117", visitor="1", transactionid="9"),
    rr("view", ts="1433221000000", visitor="2"),
]


def events_of(rows: Iterator[Any]) -> list[tuple[int, Mapped]]:
    return [(r.line, m) for r in rows if not isinstance(r.result, EventError) for m in r.result]


def test_an_unsorted_retailrocket_file_is_replayed_in_event_time_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", RR_HEADER, UNSORTED_RR)
    results = list(mapped_rows(path))  # auto: Retailrocket → sorted in memory
    events = events_of(iter(results))
    assert [(line, m.timestamp_ms) for line, m in events] == [
        (7, 1433221000000),
        (3, 1433221332117),
        (6, 1433221332117),  # same time: file order
        (4, 1433221999827),
        (2, 1433224214164),
    ]
    # the ids are those of the file's lines, as if mapped in file order
    by_line = dict(map_rows(RETAILROCKET, [{k: v for k, v in r.items()} for r in UNSORTED_RR]))
    for line, m in events:
        expected = by_line[line]
        assert not isinstance(expected, EventError)
        assert m.doc == expected[0].doc
    rejected = [(r.line, r.result.code) for r in results if isinstance(r.result, EventError)]
    assert rejected == [(5, "bad_timestamp")]


def test_presorted_input_out_of_order_beyond_the_lateness_stops(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", RR_HEADER, UNSORTED_RR)
    with pytest.raises(OrderError) as caught:
        list(mapped_rows(path, presorted=True, max_lateness_s=60))
    assert (caught.value.late.line, caught.value.latest.line) == (3, 2)
    # within a lateness of an hour the same file streams, in order
    events = events_of(mapped_rows(path, presorted=True, max_lateness_s=3600))
    assert [line for line, _ in events] == [7, 3, 6, 4, 2]


def test_rees46_sessions_follow_event_time_when_the_file_is_sorted_in_memory(
    tmp_path: Path,
) -> None:
    rows = [
        rees("view", session=SESSION_A, time="2019-10-01 00:00:00 UTC"),
        rees("view", session=SESSION_A, time="2019-10-01 00:00:10 UTC"),
        rees("view", session=SESSION_B, time="2019-10-01 00:00:05 UTC"),
    ]
    path = write_csv(tmp_path / "rees.csv", REES46_HEADER, rows)
    in_file_order = [m.doc["type"] for m in mapped(REES46, rows)]
    assert in_file_order.count("session_started") == 2  # A, A, B in file order; A, B, A in time
    sorted_types = [
        (line, m.doc["type"]) for line, m in events_of(mapped_rows(path, presorted=False))
    ]
    assert sorted_types == [
        (2, "session_started"),
        (2, "product_viewed"),
        (4, "session_started"),
        (4, "product_viewed"),
        (3, "session_started"),
        (3, "product_viewed"),
    ]
    streamed = [
        (line, m.doc["type"]) for line, m in events_of(mapped_rows(path, max_lateness_s=60))
    ]
    assert streamed == sorted_types


def test_gzip_bom_and_plain_files_read_the_same(tmp_path: Path) -> None:
    rows = [rees("view"), rees("cart"), rees("purchase")]
    plain = write_csv(tmp_path / "oct.csv", REES46_HEADER, rows)
    packed = write_csv(tmp_path / "oct.csv.gz", REES46_HEADER, rows)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    docs = [[m.doc for _, m in events_of(mapped_rows(p))] for p in (plain, packed, bom)]
    assert docs[0] == docs[1] == docs[2]
    assert len(docs[0]) == 4
    assert len(events_of(mapped_rows(plain, limit=1))) == 2


def test_unreadable_input_is_a_replay_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="cannot read"):
        list(mapped_rows(tmp_path / "missing.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ReplayError, match="empty"):
        list(mapped_rows(tmp_path / "empty.csv"))
    other = tmp_path / "other.csv"
    other.write_text("user,time,action\n1,2,3\n")
    with pytest.raises(ReplayError, match="no known layout"):
        list(mapped_rows(other))
    rr_file = write_csv(tmp_path / "rr.csv", RR_HEADER, [rr()])
    with pytest.raises(ReplayError, match="lacks the rees46 columns"):
        list(mapped_rows(rr_file, REES46))
    truncated = tmp_path / "truncated.csv.gz"
    body = ",".join(RR_HEADER).encode() + b"\n" + b"1433221332117,1,view,2,\n" * 5000
    truncated.write_bytes(gzip.compress(body)[:-20])
    with pytest.raises(ReplayError, match="cannot read"):
        list(mapped_rows(truncated))


def test_a_dry_run_validates_counts_and_writes_the_rejected_rows(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "events.csv", RR_HEADER, [*UNSORTED_RR, rr("view", visitor="x" * 300)]
    )
    rejected = tmp_path / "rejected.jsonl"
    report = replay_file(Settings(), path, rejected_path=rejected, dry_run=True)
    assert (report.layout, report.presorted, report.rows) == (RETAILROCKET, False, 7)
    assert (report.events, report.sent, report.rejected) == (6, 5, 2)
    assert report.rejected_by_code == {"bad_timestamp": 1, "id_too_long": 1}
    assert report.first_event_ms == 1433221000000 and report.last_event_ms == 1433224214164
    lines = [orjson.loads(line) for line in rejected.read_bytes().splitlines()]
    assert [(r["line"], r["stage"], r["code"]) for r in lines] == [
        (5, "map", "bad_timestamp"),
        (8, "validate", "id_too_long"),
    ]
    assert lines[0]["row"]["timestamp"] == "not-a-time"
    assert lines[1]["event"]["user_id"] == "x" * 300


# ---- the command (dry runs: no Kafka) -----------------------------------------------


def run_command(*args: str, stdin: bytes | None = None) -> Any:
    clean = {k: None for k in os.environ if k.startswith("USERPULSE_")}
    return CliRunner().invoke(replay_command, list(args), input=stdin, env=clean)


def test_the_command_prints_a_summary_and_keeps_rejections(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "oct.csv.gz", REES46_HEADER, [rees("view"), rees("like"), rees("cart")]
    )
    rejected = tmp_path / "rejected.jsonl"
    result = run_command("--dry-run", "--rejected", str(rejected), str(path))
    assert result.exit_code == 0, result.output
    assert "rees46, presorted, streamed" in result.stdout
    assert "rows      3" in result.stdout
    assert "3 mapped, 3 valid (dry run: nothing sent)" in result.stdout
    assert "rejected  1 (unknown_event_type 1)" in result.stdout
    assert [orjson.loads(line)["line"] for line in rejected.read_bytes().splitlines()] == [3]


def test_the_command_reads_stdin_and_shows_the_first_rejections(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", RR_HEADER, UNSORTED_RR)
    result = run_command("--dry-run", "--limit", "4", "-", stdin=path.read_bytes())
    assert result.exit_code == 0, result.output
    assert "retailrocket, sorted in memory" in result.stdout
    assert "rows      4" in result.stdout
    assert "line 5: bad_timestamp at $.timestamp" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--presorted"], "rerun with --no-presorted"),
        (["--layout", "rees46"], "lacks the rees46 columns"),
    ],
)
def test_command_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "events.csv", RR_HEADER, UNSORTED_RR)
    result = run_command("--dry-run", *args, str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith("userpulse: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_progress_is_one_rewritten_line_on_a_terminal_and_lines_in_a_log() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        line = ProgressLine(stream)
        for second in range(3):
            line.show(f"replaying {1000 * second:,} rows  900 events/s", float(second), "replaying")
        line.end()
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")
    assert "2,000 rows" in tty.getvalue() and "900 events/s" in tty.getvalue()
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") >= 1
