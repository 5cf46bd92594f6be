"""Public e-commerce event logs mapped to the userpulse event contract.

Pure: rows (dicts of strings, as ``csv.DictReader`` yields them) in, event
documents out. Reading files and publishing is the job of ``agents.replay``.
The mappings are documented in docs/replay.md.

Every mapped event gets a deterministic ``event_id`` (layout, line number), so
replaying the same file twice publishes the same ids and the pipeline's
de-duplication drops the second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.errors import EventError

REES46 = "rees46"
RETAILROCKET = "retailrocket"

#: Columns that identify a layout in a CSV header.
LAYOUT_COLUMNS: dict[str, frozenset[str]] = {
    REES46: frozenset(
        {"event_time", "event_type", "product_id", "price", "user_id", "user_session"}
    ),
    RETAILROCKET: frozenset({"timestamp", "visitorid", "event", "itemid", "transactionid"}),
}

DATASET_CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Mapped:
    """One mapped event: its event time, key and document."""

    timestamp_ms: int
    user_id: str
    doc: dict[str, Any]


def detect_layout(header: Iterable[str]) -> str:
    """The layout whose columns the CSV ``header`` has, or an EventError."""
    columns = {h.strip() for h in header}
    for name, required in LAYOUT_COLUMNS.items():
        if required <= columns:
            return name
    raise EventError(
        "unknown_layout",
        "$",
        "the CSV header matches no known layout; expected the REES46 columns "
        f"({', '.join(sorted(LAYOUT_COLUMNS[REES46]))}) or the Retailrocket columns "
        f"({', '.join(sorted(LAYOUT_COLUMNS[RETAILROCKET]))})",
    )


def parse_rees46_time(value: str) -> int:
    """``2019-10-01 00:00:00 UTC`` → epoch milliseconds."""
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventError("bad_timestamp", "$.event_time", f"{value!r} is not a time") from None
    if parsed.tzinfo is None:
        raise EventError("bad_timestamp", "$.event_time", f"{value!r} has no zone")
    return int(parsed.timestamp() * 1000)


def _price(value: str, path: str) -> float:
    try:
        price = float(value) if value.strip() else 0.0
    except ValueError:
        raise EventError("wrong_type", path, f"price {value!r} is not a number") from None
    if not price >= 0:  # also catches NaN
        raise EventError("negative_amount", path, f"price {value!r} is negative")
    return price


def _required(row: Mapping[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise EventError("missing_field", f"$.{column}", f"column {column} is empty")
    return value


@dataclass
class Rees46Mapper:
    """REES46 "eCommerce behavior data from multi category store".

    view → product_viewed; cart → product_added; remove_from_cart →
    product_removed; purchase → order_completed (one order per purchased
    row). A ``session_started`` is inserted when a user's ``user_session``
    changes. The cart id is the user session.
    """

    _session: dict[str, str] = field(default_factory=dict)

    def map(self, line: int, row: Mapping[str, str]) -> list[Mapped]:
        user = _required(row, "user_id")
        ts = parse_rees46_time(_required(row, "event_time"))
        kind = _required(row, "event_type")
        product = _required(row, "product_id")
        session = (row.get("user_session") or "").strip() or f"nosession-{user}"
        price = _price(row.get("price") or "", "$.price")
        out: list[Mapped] = []
        if self._session.get(user) != session:
            self._session[user] = session
            out.append(
                _mapped(f"{REES46}-{line}-s", "session_started", user, ts, {"session_id": session})
            )
        event_id = f"{REES46}-{line}"
        if kind == "view":
            props: dict[str, Any] = {"product_id": product, "price": price}
            for column in ("category_id", "category_code", "brand"):
                if (row.get(column) or "").strip():
                    props[column] = row[column].strip()
            out.append(_mapped(event_id, "product_viewed", user, ts, props))
        elif kind in ("cart", "remove_from_cart"):
            etype = "product_added" if kind == "cart" else "product_removed"
            props = {"product_id": product, "quantity": 1, "price": price, "cart_id": session}
            out.append(_mapped(event_id, etype, user, ts, props))
        elif kind == "purchase":
            props = {
                "order_id": f"{session}-{line}",
                "revenue": price,
                "currency": DATASET_CURRENCY,
                "products": [{"product_id": product, "quantity": 1, "price": price}],
                "cart_id": session,
            }
            out.append(_mapped(event_id, "order_completed", user, ts, props))
        else:
            raise EventError(
                "unknown_event_type",
                "$.event_type",
                f"REES46 event_type {kind!r} is not view, cart, remove_from_cart or purchase",
            )
        return out


@dataclass
class RetailrocketMapper:
    """Retailrocket ``events.csv``: view → product_viewed; addtocart →
    product_added; transaction → order_completed (order id = transactionid).

    The file has no prices (they live, hashed, in item_properties), so prices
    and revenue are 0; the cart id is ``visitor-cart``.
    """

    def map(self, line: int, row: Mapping[str, str]) -> list[Mapped]:
        user = _required(row, "visitorid")
        raw_ts = _required(row, "timestamp")
        if not raw_ts.isdigit():
            raise EventError("bad_timestamp", "$.timestamp", f"{raw_ts!r} is not epoch ms")
        ts = int(raw_ts)
        kind = _required(row, "event")
        item = _required(row, "itemid")
        event_id = f"{RETAILROCKET}-{line}"
        if kind == "view":
            return [_mapped(event_id, "product_viewed", user, ts, {"product_id": item})]
        if kind == "addtocart":
            props = {"product_id": item, "quantity": 1, "price": 0.0, "cart_id": f"{user}-cart"}
            return [_mapped(event_id, "product_added", user, ts, props)]
        if kind == "transaction":
            order = _required(row, "transactionid")
            props = {
                "order_id": order,
                "revenue": 0.0,
                "currency": DATASET_CURRENCY,
                "products": [{"product_id": item, "quantity": 1, "price": 0.0}],
                "cart_id": f"{user}-cart",
            }
            return [_mapped(event_id, "order_completed", user, ts, props)]
        raise EventError(
            "unknown_event_type",
            "$.event",
            f"Retailrocket event {kind!r} is not view, addtocart or transaction",
        )


def mapper_for(layout: str) -> Rees46Mapper | RetailrocketMapper:
    if layout == REES46:
        return Rees46Mapper()
    if layout == RETAILROCKET:
        return RetailrocketMapper()
    raise EventError("unknown_layout", "$", f"unknown layout {layout!r}")


def map_rows(
    layout: str, rows: Iterable[Mapping[str, str]]
) -> Iterator[tuple[int, list[Mapped] | EventError]]:
    """Map ``rows`` (line numbers from 2: line 1 is the header); a bad row
    yields its EventError instead of stopping the replay."""
    mapper = mapper_for(layout)
    for line, row in enumerate(rows, start=2):
        try:
            yield line, mapper.map(line, row)
        except EventError as error:
            yield line, error


def _mapped(event_id: str, etype: str, user: str, ts: int, props: dict[str, Any]) -> Mapped:
    doc = {
        "event_id": event_id,
        "type": etype,
        "user_id": user,
        "timestamp": ts,
        "properties": props,
        "context": {"channel": "web", "source": "replay"},
    }
    return Mapped(ts, user, doc)
