"""Public e-commerce event logs mapped to the userpulse event contract.

Pure: rows (dicts of strings, as ``csv.DictReader`` yields them) in, event
documents out. Reading files and publishing is the job of ``agents.replay``.
The mappings are documented in docs/replay.md.

Every mapped event gets a deterministic ``event_id`` built from the layout,
the row's number in the file and a digest of the row's values
(``rees46-2-1f0c3a9b7d2e``), so replaying the same file twice publishes the
same ids and the pipeline's de-duplication drops the second copy, while rows
of *another* file (the next month of the same dataset) never share an id.

A row that cannot be mapped raises :class:`~streams.errors.EventError` with
one of :data:`MAPPING_CODES` (or a contract code from
:data:`streams.events.REJECTION_CODES` where one fits); :func:`map_rows`
turns it into a result and goes on with the next row.

Events must reach the pipeline in event-time order; :func:`in_time_order`
restores the order of nearly sorted input with a bounded buffer and stops at
a row later than the allowed lateness (:class:`OrderError`).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, NamedTuple, TypeVar

from streams.errors import EventError, UserpulseError

REES46 = "rees46"
RETAILROCKET = "retailrocket"
LAYOUTS: Final = (REES46, RETAILROCKET)

#: Columns that identify a layout in a CSV header.
LAYOUT_COLUMNS: dict[str, frozenset[str]] = {
    REES46: frozenset(
        {"event_time", "event_type", "product_id", "price", "user_id", "user_session"}
    ),
    RETAILROCKET: frozenset({"timestamp", "visitorid", "event", "itemid", "transactionid"}),
}

#: The columns whose values make a row's digest (part of its event ids), in order.
DIGEST_COLUMNS: dict[str, tuple[str, ...]] = {
    REES46: (
        "event_time",
        "event_type",
        "product_id",
        "category_id",
        "category_code",
        "brand",
        "price",
        "user_id",
        "user_session",
    ),
    RETAILROCKET: ("timestamp", "visitorid", "event", "itemid", "transactionid"),
}

#: Codes a row can get from the mapping itself, beyond the contract's own
#: (``missing_field``, ``wrong_type``, ``bad_timestamp``, ``bad_amount``).
MAPPING_CODES: Final[Mapping[str, str]] = {
    "unknown_event_type": "the dataset's event kind is not one the layout maps",
    "unknown_layout": "the CSV header matches no known layout",
}

DATASET_CURRENCY = "USD"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Mapped:
    """One mapped event: its event time, key and document."""

    timestamp_ms: int
    user_id: str
    doc: dict[str, Any]


def detect_layout(header: Iterable[str]) -> str:
    """The layout whose columns the CSV ``header`` has, or an EventError."""
    columns = {h.strip().lstrip("\ufeff") for h in header}
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


def check_layout(layout: str, header: Iterable[str]) -> None:
    """Raise an EventError when ``header`` lacks a column ``layout`` needs."""
    if layout not in LAYOUT_COLUMNS:
        raise EventError("unknown_layout", "$", f"unknown layout {layout!r}")
    missing = LAYOUT_COLUMNS[layout] - {h.strip().lstrip("\ufeff") for h in header}
    if missing:
        raise EventError(
            "unknown_layout",
            "$",
            f"the CSV header lacks the {layout} columns {', '.join(sorted(missing))}",
        )


def parse_rees46_time(value: str) -> int:
    """``2019-10-01 00:00:00 UTC`` → epoch milliseconds (exact, no floating point)."""
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventError("bad_timestamp", "$.event_time", f"{value!r} is not a time") from None
    if parsed.tzinfo is None:
        raise EventError("bad_timestamp", "$.event_time", f"{value!r} has no zone")
    return (parsed - _EPOCH) // _ONE_MS


def parse_retailrocket_time(value: str) -> int:
    """Retailrocket's ``timestamp`` column: epoch milliseconds as digits."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise EventError("bad_timestamp", "$.timestamp", f"{value!r} is not epoch ms")
    return int(text)


def row_time(layout: str, row: Mapping[str, str]) -> int:
    """The event time of ``row`` in epoch ms (what replay orders by), or an EventError."""
    if layout == REES46:
        return parse_rees46_time(_required(row, "event_time"))
    if layout == RETAILROCKET:
        return parse_retailrocket_time(_required(row, "timestamp"))
    raise EventError("unknown_layout", "$", f"unknown layout {layout!r}")


def row_digest(layout: str, row: Mapping[str, str]) -> str:
    """12 hex digits that identify the row's content (part of its event ids)."""
    material = "\x1f".join((row.get(c) or "").strip() for c in DIGEST_COLUMNS[layout])
    return hashlib.blake2b(material.encode(), digest_size=6).hexdigest()


def _price(value: str, path: str) -> float:
    try:
        price = float(value) if value.strip() else 0.0
    except ValueError:
        raise EventError("wrong_type", path, f"price {value!r} is not a number") from None
    if price != price or price in (float("inf"), float("-inf")):
        raise EventError("bad_amount", path, f"price {value!r} is not a finite number")
    if price < 0:
        raise EventError("bad_amount", path, f"price {value!r} must not be negative")
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
    row, carrying the product, so that it closes the open cart it bought
    from in any session — streams.state). A ``session_started`` is inserted
    before a user's first row and whenever the user's ``user_session``
    changes.

    The cart id of an add and of a purchase is the user session. The shop's
    cart outlives a session, so a remove names the cart of the user's latest
    ``cart`` row — the user's open cart — rather than the session it
    happened in: a product added yesterday and removed today leaves the cart.

    The mapper remembers each user's current session (about 180 bytes per
    distinct user) and the session of their latest ``cart`` row, so rows
    must come in event-time order.
    """

    _session: dict[str, str] = field(default_factory=dict)
    _cart_session: dict[str, str] = field(default_factory=dict)

    def map(self, line: int, row: Mapping[str, str]) -> list[Mapped]:
        user = _required(row, "user_id")
        ts = parse_rees46_time(_required(row, "event_time"))
        kind = _required(row, "event_type")
        product = _required(row, "product_id")
        session = (row.get("user_session") or "").strip() or f"nosession-{user}"
        price = _price(row.get("price") or "", "$.price")
        event_id = f"{REES46}-{line}-{row_digest(REES46, row)}"
        if kind == "view":
            props: dict[str, Any] = {"product_id": product, "price": price}
            for column in ("category_id", "category_code", "brand"):
                value = (row.get(column) or "").strip()
                if value:
                    props[column] = value
            event = _mapped(event_id, "product_viewed", user, ts, props)
        elif kind == "cart":
            props = {"product_id": product, "quantity": 1, "price": price, "cart_id": session}
            event = _mapped(event_id, "product_added", user, ts, props)
            self._cart_session[user] = session
        elif kind == "remove_from_cart":
            cart = self._cart_session.get(user, session)
            props = {"product_id": product, "quantity": 1, "price": price, "cart_id": cart}
            event = _mapped(event_id, "product_removed", user, ts, props)
        elif kind == "purchase":
            props = {
                "order_id": f"{session}-{line}",
                "revenue": price,
                "currency": DATASET_CURRENCY,
                "products": [{"product_id": product, "quantity": 1, "price": price}],
                "cart_id": session,
            }
            event = _mapped(event_id, "order_completed", user, ts, props)
        else:
            raise EventError(
                "unknown_event_type",
                "$.event_type",
                f"REES46 event_type {kind!r} is not view, cart, remove_from_cart or purchase",
            )
        # Only a row that mapped may move the session: a rejected row must not
        # swallow the session_started of the next good row.
        if self._session.get(user) == session:
            return [event]
        self._session[user] = session
        started = _mapped(f"{event_id}-s", "session_started", user, ts, {"session_id": session})
        return [started, event]


@dataclass
class RetailrocketMapper:
    """Retailrocket ``events.csv``: view → product_viewed; addtocart →
    product_added; transaction → order_completed (order id = transactionid).

    The file has no prices (they live, hashed, in item_properties), so prices
    and revenue are 0; the cart id is ``visitor-cart``. Stateless.
    """

    def map(self, line: int, row: Mapping[str, str]) -> list[Mapped]:
        user = _required(row, "visitorid")
        ts = parse_retailrocket_time(_required(row, "timestamp"))
        kind = _required(row, "event")
        item = _required(row, "itemid")
        event_id = f"{RETAILROCKET}-{line}-{row_digest(RETAILROCKET, row)}"
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
    return map_numbered_rows(layout, enumerate(rows, start=2))


def map_numbered_rows(
    layout: str, rows: Iterable[tuple[int, Mapping[str, str]]]
) -> Iterator[tuple[int, list[Mapped] | EventError]]:
    """Like :func:`map_rows` for rows that carry their own line numbers (rows
    put in time order keep the numbers, and so the event ids, of the file)."""
    mapper = mapper_for(layout)
    for line, row in rows:
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


# ---------------------------------------------------------------------------
# Event-time order

T = TypeVar("T")


class Timed(NamedTuple, Generic[T]):
    """An item with its event time and its line number in the file.

    Ordered by (time, line) — line numbers are unique, so the item itself is
    never compared — and compared in C, which matters for millions of rows.
    """

    timestamp_ms: int
    line: int
    item: T


class OrderError(UserpulseError):
    """Input that was promised to be sorted has a row later than the allowed lateness."""

    def __init__(self, late: Timed[Any], latest: Timed[Any], lateness_ms: int) -> None:
        behind_s = (latest.timestamp_ms - late.timestamp_ms) / 1000
        super().__init__(
            f"line {late.line} (event time {_iso(late.timestamp_ms)}) is {behind_s:g} s "
            f"earlier than line {latest.line} ({_iso(latest.timestamp_ms)}); the allowed "
            f"lateness is {lateness_ms / 1000:g} s"
        )
        self.late = late
        self.latest = latest
        self.lateness_ms = lateness_ms


def in_time_order(items: Iterable[Timed[T]], lateness_ms: int) -> Iterator[Timed[T]]:
    """``items`` (in line order) in (event time, line) order, for input that is
    sorted up to ``lateness_ms``.

    An item is held until an item ``lateness_ms`` later has been seen, so the
    buffer holds the items of one lateness window. An item more than
    ``lateness_ms`` earlier than the latest item seen raises
    :class:`OrderError`: the input is not as sorted as promised.
    """
    heap: list[Timed[T]] = []
    latest: Timed[T] | None = None
    for item in items:
        if latest is None or item.timestamp_ms > latest.timestamp_ms:
            latest = item
        elif item.timestamp_ms < latest.timestamp_ms - lateness_ms:
            raise OrderError(item, latest, lateness_ms)
        heapq.heappush(heap, item)
        watermark = latest.timestamp_ms - lateness_ms
        while heap and heap[0].timestamp_ms <= watermark:
            yield heapq.heappop(heap)
    while heap:
        yield heapq.heappop(heap)


def sorted_by_time(items: Iterable[Timed[T]]) -> list[Timed[T]]:
    """All ``items`` in (event time, line) order — the whole input in memory."""
    return sorted(items)


def _iso(ts_ms: int) -> str:
    return (_EPOCH + ts_ms * _ONE_MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")
