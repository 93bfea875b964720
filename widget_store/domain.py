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
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.DISPATCHED, OrderStatus.CANCELLED})


class PaymentVerdict(StrEnum):
    """What became of the payment; decided exactly once per order."""

    AWAITING = "awaiting"
    PAID = "paid"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class Reservation(StrEnum):
    """The stock an order holds: none yet, held, refused for want of stock, given back."""

    NONE = "none"
    HELD = "held"
    SHORT = "short"
    RELEASED = "released"


class PaymentState(StrEnum):
    """Where the order's money is, as the store knows it."""

    CAPTURED = "captured"  # the provider said paid
    REFUNDED = "refunded"
    VOIDED = "voided"  # opened (maybe authorised), never captured, and now never will be
    UNTOUCHED = "untouched"  # the undo found nothing captured and nothing to void


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
class Restocked:
    """One product after a restock: what the operator said is on hand, what live orders
    hold of it, and so what is left for shoppers."""

    product_id: int
    on_hand: int
    held: int
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
class OrderSnapshot:
    """An order as the step that just committed it knows it: what the checkout call
    answers with, handed to it in-process with the news, so that it need not read the
    row back (the same fields as the row's)."""

    order_id: int
    fingerprint: str
    status: str
    payment_id: str
    payment_url: str | None
    access_token: str
    payment_verdict: str | None
    reservation: str
    cancel_reason: str | None = None
    short_items: str | None = None  # JSON, as in the row; None when the stock was held


@dataclass(frozen=True)
class Shipment:
    """Version 0.1's create_shipment output (kept for the checkouts it started)."""

    tracking_number: str
    attempts: int  # how many calls to the carrier it took


@dataclass(frozen=True)
class ShippingOutcome:
    """What ship_order did: booked and dispatching, or refused for good (and why)."""

    attempts: int  # calls to the carrier it took
    tracking_number: str | None = None  # None: the carrier refused or stayed down
    refusal: str | None = None
    dispatch_s: float = 0.0  # how long the dispatch takes; 0 skips the durable sleep
    dispatch_until: float = 0.0  # epoch seconds

    @property
    def shipped(self) -> bool:
        return self.tracking_number is not None


class UndoResult(StrEnum):
    """How a compensation ended: it gave something back, or there was nothing to give."""

    DONE = "done"
    NOTHING_TO_UNDO = "nothing_to_undo"


@dataclass(frozen=True)
class Undone:
    """A compensation's outcome, with the words the order's history shows."""

    result: UndoResult
    detail: str


@dataclass(frozen=True)
class UnfinishedOrder:
    """An order the watchdog found unfinished: what resolving it needs."""

    order_id: int
    checkout_key: str
    status: str
    payment_id: str
    total_cents: int
    shipping_address: str


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


class Stage(StrEnum):
    """Where an order is in its saga, as an operator names it."""

    STARTING = "starting"  # created, stock not yet held or payment not yet open
    WAITING_FOR_PAYMENT = "waiting_for_payment"
    SETTLING = "settling"  # the verdict is in; shipping it, or undoing it
    DISPATCHING = "dispatching"
    DISPATCHED = "dispatched"
    COMPENSATED = "compensated"  # cancelled: every step it took was undone


class StageFilter(StrEnum):
    """The filters the operations view offers: a status, or a stage that matters."""

    PENDING = "pending"
    WAITING_FOR_PAYMENT = "waiting_for_payment"
    PAID = "paid"
    DISPATCHED = "dispatched"
    COMPENSATED = "compensated"


# --- rules ----------------------------------------------------------------------------


def stage_of(status: str, payment_verdict: str | None) -> Stage:
    if status == OrderStatus.CANCELLED:
        return Stage.COMPENSATED
    if status == OrderStatus.DISPATCHED:
        return Stage.DISPATCHED
    if status == OrderStatus.PAID:
        return Stage.DISPATCHING
    if payment_verdict is None:
        return Stage.STARTING
    if payment_verdict == PaymentVerdict.AWAITING:
        return Stage.WAITING_FOR_PAYMENT
    return Stage.SETTLING


def reason_for(verdict: PaymentVerdict) -> CancelReason:
    """Why an order whose payment did not go through is cancelled."""
    if verdict is PaymentVerdict.FAILED:
        return CancelReason.PAYMENT_DECLINED
    return CancelReason.PAYMENT_TIMED_OUT


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


def restocked(product_id: int, on_hand: int, held: int) -> Restocked:
    """A restock says how many units are on hand, counting those set aside for orders not
    yet dispatched: those are not for sale, so the shelf gets the rest (never below zero).

    When each of those orders is released its units come back, and the shelf holds what
    was asked; when it is dispatched its units leave the building with it.
    """
    return Restocked(product_id, on_hand, held, max(0, on_hand - held))


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


# --- trips ----------------------------------------------------------------------------
# The trip saga (`trip.py`): a car, a hotel and a flight, booked in that order, or none.

MAX_TRIP_ATTEMPTS = 20
MAX_TRIP_ITEM_LENGTH = 200


class TripStatus(StrEnum):
    PENDING = "PENDING"
    BOOKED = "BOOKED"
    ROLLED_BACK = "ROLLED_BACK"

    @property
    def is_terminal(self) -> bool:
        return self is not TripStatus.PENDING


class TripEvent(StrEnum):
    """The trip history's vocabulary (and its events' types on the bus)."""

    REQUESTED = "RequestTrip_ok"
    CAR_BOOKED = "BookCar_ok"
    CAR_FAILED = "BookCar_failed"
    HOTEL_BOOKED = "BookHotel_ok"
    HOTEL_FAILED = "BookHotel_failed"
    FLIGHT_BOOKED = "BookFlight_ok"
    FLIGHT_FAILED = "BookFlight_failed"
    # Compensations, named for what they undo.
    CAR_CANCELLED = "CancelCar"
    HOTEL_CANCELLED = "CancelHotel"
    FLIGHT_CANCELLED = "CancelFlight"
    COMPENSATION_PARKED = "Compensation_parked"
    COMPENSATION_RETRIED = "Compensation_retried"
    # Outcomes.
    BOOKED = "trip_booked"
    ROLLED_BACK = "trip_rolled_back"


@dataclass(frozen=True)
class TripRequest:
    """A validated trip: who travels, the three items, and how often to try each leg."""

    user_id: str
    car_id: str
    hotel_id: str
    flight_id: str
    attempts: int

    def item(self, leg: str) -> str:
        """The item booked for `leg` ("car", "hotel" or "flight")."""
        items = {"car": self.car_id, "hotel": self.hotel_id, "flight": self.flight_id}
        return items[leg]

    def fingerprint(self) -> str:
        """A digest of what was asked for, to tell a retry from a different trip."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class LegOutcome:
    """What one booking step got from its service: a confirmation, or why not."""

    trip_id: int
    attempts: int  # calls to the service it took
    confirmation: str | None = None
    refusal: str | None = None  # set when the leg was not booked: rolled back

    @property
    def booked(self) -> bool:
        return self.confirmation is not None


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


class StoreBusy(StoreError):
    """This process is starting as many checkouts as it takes at once; retry shortly."""


class StoreStalled(StoreError):
    """Work has been in flight for a while and none of it finishes: the health check fails."""


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


class WebhookMismatch(StoreError):
    """The signed webhook body does not say what the path says, or reuses another's event."""


class NotAuthorized(StoreError):
    """The request needs the order's token or the admin token."""


class TripNotFound(StoreError):
    pass


class TripStillRunning(StoreError):
    """The trip has not finished within the reply's time; the client may retry the key."""


class TripFailed(StoreError):
    """The trip's workflow ended without booking or rolling back (an operator's matter)."""


# --- what the outside world answers (the ports raise these) ---------------------------
# Step errors are pickled into DBOS's history by class path: the old paths
# (widget_store.shipping, widget_store.payments) re-export these for the checkouts
# version 0.1 started.


class ShippingUnavailable(Exception):
    """The carrier failed transiently (or did not answer): worth retrying with backoff.

    A call that timed out may or may not have booked the shipment; the compensation,
    keyed by the same shipment key, cancels it either way.
    """


class ShippingRejected(Exception):
    """A permanent failure (an undeliverable address): retrying cannot help."""


class PaymentProviderUnavailable(Exception):
    """The provider could not act now (down, timed out); the saga retries the undo."""


RefundFailed = PaymentProviderUnavailable  # version 0.1's name for it


class InvalidSignature(Exception):
    """The webhook is unsigned, forged or stale. Deliberately says no more than that."""
