"""The store's vocabulary: types, statuses, domain errors and pure rules. No I/O here.

Values that cross a DBOS checkpoint (workflow inputs, step results) are plain frozen
dataclasses from this module, so the names below are part of the durable format:
renaming one strands the checkouts in flight at the time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

MAX_QUANTITY = 100
MAX_LINES = 50
MAX_ADDRESS_LENGTH = 500
DEFAULT_SHIPPING_ADDRESS = "1 Demo Street, Widgetville"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    DISPATCHED = "DISPATCHED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.DISPATCHED, OrderStatus.CANCELLED)


class PaymentVerdict(StrEnum):
    """What became of the payment; decided exactly once per order."""

    AWAITING = "awaiting"
    PAID = "paid"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out of stock"
    PAYMENT_DECLINED = "payment declined"
    PAYMENT_TIMED_OUT = "payment timed out"
    SHIPPING_FAILED = "shipping failed"
    UNKNOWN_PRODUCT = "unknown product"
    STALLED = "stalled checkout, resolved by the watchdog"
    INTERNAL_ERROR = "internal error"


class OrderEvent(StrEnum):
    """The order event log's vocabulary: steps, compensations and outcomes."""

    ORDER_CREATED = "CreateOrder_ok"
    RESERVED = "ReserveInventory_ok"
    RESERVE_FAILED = "ReserveInventory_failed"
    PAYMENT_OPENED = "OpenPayment_ok"
    CHARGED = "ChargePayment_ok"
    CHARGE_FAILED = "ChargePayment_failed"
    SHIPMENT_CREATED = "CreateShipment_ok"
    SHIPMENT_FAILED = "CreateShipment_failed"
    DISPATCH_STARTED = "Dispatch_started"
    DISPATCHED = "Dispatch_ok"
    # Compensations are named for what they undo.
    ORDER_CANCELLED = "CancelOrder"
    RESERVATION_RELEASED = "ReleaseReservation"
    PAYMENT_REFUNDED = "RefundPayment"
    SHIPMENT_CANCELLED = "CancelShipment"
    # A compensation that kept failing, parked for an operator; and its retry.
    COMPENSATION_PARKED = "Compensation_parked"
    COMPENSATION_RETRIED = "Compensation_retried"
    # Outcomes.
    COMPLETE = "checkout_complete"
    FAILED = "checkout_failed"


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LineItem:
    product_id: int
    quantity: int


@dataclass(frozen=True)
class CheckoutRequest:
    """A validated cart: one line per product, in product order."""

    items: tuple[LineItem, ...]
    shipping_address: str

    @classmethod
    def of(cls, items: Iterable[LineItem], shipping_address: str) -> CheckoutRequest:
        lines = tuple(sorted(items, key=lambda line: line.product_id))
        ids = [line.product_id for line in lines]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InvalidRequest(f"product {duplicates[0]} appears on more than one line")
        if not lines:
            raise InvalidRequest("a checkout needs at least one item")
        return cls(lines, shipping_address)

    def fingerprint(self) -> str:
        """A digest of what was asked for, to tell a retry from a different order."""
        canonical = json.dumps(
            {"items": [asdict(line) for line in self.items], "address": self.shipping_address},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Product:
    product_id: int
    sku: str
    name: str
    description: str
    price_cents: int
    inventory: int


@dataclass(frozen=True)
class ShortItem:
    product_id: int
    requested: int
    available: int


@dataclass(frozen=True)
class PricedLine:
    product_id: int
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class CreatedOrder:
    order_id: int
    payment_id: str
    total_cents: int
    shipping_address: str


@dataclass(frozen=True)
class PlacedOrder:
    """The order created, with its stock held (or the lines that were short)."""

    order: CreatedOrder
    short: tuple[ShortItem, ...]
    payment_deadline: float | None  # epoch seconds; None when nothing could be held


@dataclass(frozen=True)
class Shipment:
    tracking_number: str
    attempts: int  # how many calls to the carrier it took


@dataclass(frozen=True)
class CheckoutOutcome:
    """What the checkout route tells the shopper once stock is held (or refused)."""

    order_id: int | None  # None only if the order could not even be created
    payment_id: str | None
    status: OrderStatus
    fingerprint: str
    payment_url: str | None = None
    cancel_reason: str | None = None
    short_items: tuple[ShortItem, ...] = field(default=())


# --- rules ----------------------------------------------------------------------------


def order_total(lines: Iterable[PricedLine]) -> int:
    return sum(line.quantity * line.unit_price_cents for line in lines)


def price_lines(items: Sequence[LineItem], prices: Mapping[int, int]) -> list[PricedLine]:
    """Freeze today's prices onto the order; an item with no price is an unknown product."""
    missing = [item.product_id for item in items if item.product_id not in prices]
    if missing:
        raise UnknownProduct(missing)
    return [PricedLine(i.product_id, i.quantity, prices[i.product_id]) for i in items]


def shortages(items: Iterable[LineItem], stock: Mapping[int, int]) -> list[ShortItem]:
    """The lines the shelves cannot fill."""
    return [
        ShortItem(item.product_id, item.quantity, stock.get(item.product_id, 0))
        for item in items
        if stock.get(item.product_id, 0) < item.quantity
    ]


def dispatch_remaining(status: OrderStatus, eta: datetime | None, now: datetime) -> float | None:
    """Seconds of dispatch left, derived from the durable dispatch deadline."""
    if status is OrderStatus.DISPATCHED:
        return 0.0
    if status is not OrderStatus.PAID or eta is None:
        return None
    return round(max(0.0, (eta - now).total_seconds()), 1)


def describe_shortages(short: Iterable[ShortItem]) -> str:
    return "; ".join(
        f"product {s.product_id}: {s.requested} requested, {s.available} in stock" for s in short
    )


# --- errors ---------------------------------------------------------------------------


class StoreError(Exception):
    """A domain error: the API maps each subclass to one HTTP status."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidRequest(StoreError):
    pass


class UnknownProduct(StoreError):
    def __init__(self, product_ids: Sequence[int]) -> None:
        listed = ", ".join(str(i) for i in product_ids)
        super().__init__(f"unknown product: {listed}", product_ids=list(product_ids))


class OrderNotFound(StoreError):
    pass


class OutOfStock(StoreError):
    def __init__(self, order_id: int, short: Sequence[ShortItem]) -> None:
        super().__init__(
            f"out of stock: {describe_shortages(short)}",
            order_id=order_id,
            short_items=[asdict(s) for s in short],
        )


class IdempotencyConflict(StoreError):
    pass


class CheckoutRejected(StoreError):
    """The checkout ended before the shopper could pay (other than for lack of stock)."""


class CheckoutStillStarting(StoreError):
    """The checkout exists but has not reserved stock yet; the client may retry the key."""


class PaymentNotFound(StoreError):
    pass


class PaymentAmountMismatch(StoreError):
    pass


class DeadLetterNotFound(StoreError):
    pass


class DeadLetterNotParked(StoreError):
    """Only a parked compensation can be retried; this one is already retrying or done."""


class PaymentClosed(StoreError):
    """The payment was already decided or its deadline passed: the webhook changes nothing."""
