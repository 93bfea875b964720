"""THE SAGA: the checkout workflow, its steps and compensations.

One DBOS workflow per order; its workflow ID is the client's idempotency key. Steps, in
order, each with the compensation registered before it runs:

    create_order        -> cancel_order         (status CANCELLED, with the reason)
    reserve_inventory   -> release_inventory    (stock back on the shelf)
    open_payment, then wait for the provider's verdict (DBOS.recv, explicit deadline)
    charge_payment      -> refund_payment       (provider refund, idempotency key)
    create_shipment     -> cancel_shipment      (carrier cancellation)
    mark_paid, a durable sleep for the dispatch, complete_dispatch

Database steps run as DBOS datasource transactions: the step's writes, its entry in the
order event log and its checkpoint commit together, exactly once. Calls to the outside
(payment provider, carrier) are DBOS steps, made idempotent by keys the outside honours.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar

from dbos import DBOS, AsyncSQLAlchemyDatasource, SetWorkflowID
from dbos._error import DBOSConflictingWorkflowError, DBOSMaxStepRetriesExceeded

from widget_store import queries
from widget_store.domain import (
    CancelReason,
    CheckoutOutcome,
    CheckoutRequest,
    CheckoutStillStarting,
    IdempotencyConflict,
    OrderEvent,
    OrderStatus,
    OutOfStock,
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    PaymentVerdict,
    ShortItem,
    UnknownProduct,
    describe_shortages,
    order_total,
    price_lines,
)
from widget_store.payments import PaymentProvider, PaymentRequest
from widget_store.saga import Saga
from widget_store.shipping import ShippingRejected, ShippingService, ShippingUnavailable

CHECKOUT_EVENT = "checkout"  # set once stock is held (or refused): the route's answer
PAYMENT_TOPIC = "payment"  # the webhook's wake-up call to the waiting workflow
CHECKOUT_REPLY_TIMEOUT_S = 30.0

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CheckoutServices:
    """What the saga talks to. DBOS workflows are module-level functions, so the app
    installs these once at start-up (`install`) rather than passing them per call."""

    datasource: AsyncSQLAlchemyDatasource
    payments: PaymentProvider
    shipping: ShippingService
    payment_timeout_s: float
    dispatch_s: float
    isolation_level: Literal["READ COMMITTED", "SERIALIZABLE"]


_services: CheckoutServices | None = None


def install(services: CheckoutServices) -> None:
    global _services
    _services = services


def services() -> CheckoutServices:
    if _services is None:
        raise RuntimeError("checkout services are not installed; create_app() installs them")
    return _services


async def _transaction(
    name: str, body: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run `body` as one exactly-once datasource transaction named `name`."""
    svc = services()
    options: Any = {"name": name, "isolation_level": svc.isolation_level}
    return await svc.datasource.run_tx_step_async(options, body, *args, **kwargs)


def _db() -> Any:
    return services().datasource.sql_session()


class CheckoutFailed(Exception):
    def __init__(self, reason: CancelReason, short: tuple[ShortItem, ...] = ()) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.short = short


@dataclass(frozen=True)
class CreatedOrder:
    order_id: int
    payment_id: str
    total_cents: int
    shipping_address: str


# --- steps ----------------------------------------------------------------------------


async def _create_order(checkout_key: str, request: CheckoutRequest) -> CreatedOrder:
    db = _db()
    lines = price_lines(
        request.items, await queries.prices_of(db, [i.product_id for i in request.items])
    )
    total = order_total(lines)
    payment_id = f"pay_{secrets.token_hex(12)}"
    order_id = await queries.insert_order(
        db,
        checkout_key=checkout_key,
        fingerprint=request.fingerprint(),
        lines=lines,
        total_cents=total,
        shipping_address=request.shipping_address,
        payment_id=payment_id,
    )
    await queries.append_event(db, order_id, OrderEvent.ORDER_CREATED, f"total {total} cents")
    return CreatedOrder(order_id, payment_id, total, request.shipping_address)


async def _reserve_inventory(order_id: int) -> tuple[ShortItem, ...]:
    db = _db()
    short = await queries.reserve_stock(db, order_id)
    if short:
        await queries.append_event(
            db, order_id, OrderEvent.RESERVE_FAILED, describe_shortages(short)
        )
    else:
        await queries.append_event(db, order_id, OrderEvent.RESERVED)
    return tuple(short)


@DBOS.step(name="register_payment", retries_allowed=True, max_attempts=8, interval_seconds=0.5)
async def register_payment(order: CreatedOrder, expires_at: float) -> str:
    """Open the payment at the provider (idempotent by payment ID); returns its page."""
    return await services().payments.create_payment(
        PaymentRequest(
            payment_id=order.payment_id,
            order_id=order.order_id,
            amount_cents=order.total_cents,
            description=f"Widget Store order #{order.order_id}",
            expires_at_epoch=expires_at,
        )
    )


async def _open_payment(order_id: int, timeout_s: float) -> float:
    """Start waiting for the verdict; returns the payment deadline (epoch seconds)."""
    db = _db()
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    await queries.open_payment(db, order_id, deadline)
    await queries.append_event(
        db, order_id, OrderEvent.PAYMENT_OPENED, f"waiting until {deadline.isoformat()}"
    )
    return deadline.timestamp()


async def _charge_payment(order_id: int) -> PaymentVerdict:
    """Settle the verdict (no verdict by now means timed out); record a captured payment."""
    db = _db()
    verdict = await queries.close_verdict(db, order_id)
    if verdict is PaymentVerdict.PAID:
        if await queries.set_payment_state(db, order_id, old=None, new="captured"):
            await queries.append_event(db, order_id, OrderEvent.CHARGED)
    else:
        reason = _reason_for(verdict)
        await queries.append_event(db, order_id, OrderEvent.CHARGE_FAILED, reason.value)
    return verdict


def _reason_for(verdict: PaymentVerdict) -> CancelReason:
    if verdict is PaymentVerdict.FAILED:
        return CancelReason.PAYMENT_DECLINED
    return CancelReason.PAYMENT_TIMED_OUT


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, ShippingUnavailable)


@DBOS.step(
    name="create_shipment",
    retries_allowed=True,
    max_attempts=5,
    interval_seconds=0.2,
    backoff_rate=2.0,
    should_retry=_is_transient,
)
async def create_shipment(order_id: int, address: str) -> str:
    """Book the shipment with the carrier; transient failures retry with backoff."""
    return await services().shipping.create_shipment(f"order-{order_id}", address)


async def _record_event(order_id: int, event: OrderEvent, detail: str) -> None:
    await queries.append_event(_db(), order_id, event, detail)


async def _mark_paid(order_id: int, tracking_number: str, dispatch_s: float) -> float:
    """PENDING -> PAID with its tracking number and dispatch deadline; returns the deadline."""
    db = _db()
    eta = datetime.now(UTC) + timedelta(seconds=dispatch_s)
    paid = await queries.set_status(
        db,
        order_id,
        old=OrderStatus.PENDING,
        new=OrderStatus.PAID,
        tracking_number=tracking_number,
        dispatch_eta=eta,
    )
    if paid:
        await queries.append_event(db, order_id, OrderEvent.SHIPMENT_CREATED, tracking_number)
        await queries.append_event(db, order_id, OrderEvent.DISPATCH_STARTED, f"{dispatch_s:g}s")
    return eta.timestamp()


async def _complete_dispatch(order_id: int) -> None:
    db = _db()
    if await queries.set_status(db, order_id, old=OrderStatus.PAID, new=OrderStatus.DISPATCHED):
        await queries.append_event(db, order_id, OrderEvent.DISPATCHED)
        await queries.append_event(db, order_id, OrderEvent.COMPLETE)


# --- compensations --------------------------------------------------------------------


async def _cancel_order(checkout_key: str, reason: str) -> None:
    db = _db()
    order_id = await queries.cancel_order(db, checkout_key, reason)
    if order_id is not None:
        await queries.append_event(db, order_id, OrderEvent.ORDER_CANCELLED, reason)


async def cancel_order(checkout_key: str, reason: str) -> None:
    """Undo create_order: the order ends CANCELLED with the reason (if it exists)."""
    await _transaction("cancel_order", _cancel_order, checkout_key, reason)


async def _release_inventory(order_id: int) -> None:
    db = _db()
    released = await queries.release_stock(db, order_id)
    if released:
        detail = ", ".join(f"{line.quantity} x product {line.product_id}" for line in released)
        await queries.append_event(db, order_id, OrderEvent.RESERVATION_RELEASED, detail)


async def release_inventory(order_id: int) -> None:
    """Undo reserve_inventory: held stock goes back on the shelf, once."""
    await _transaction("release_inventory", _release_inventory, order_id)


async def _refund_due(order_id: int) -> bool:
    """A refund is due if the provider said paid and nothing was refunded yet."""
    verdict, state = await queries.payment_of(_db(), order_id)
    return verdict == PaymentVerdict.PAID.value and state != "refunded"


@DBOS.step(name="request_refund", retries_allowed=True, max_attempts=3, interval_seconds=0.5)
async def request_refund(payment_id: str, amount_cents: int) -> str:
    """Ask the provider for a refund; the key makes a repeated request refund once."""
    return await services().payments.refund(payment_id, amount_cents, f"refund-{payment_id}")


async def _record_refund(order_id: int, refund_id: str) -> None:
    db = _db()
    if await queries.mark_refunded(db, order_id):
        await queries.append_event(db, order_id, OrderEvent.PAYMENT_REFUNDED, refund_id)


async def refund_payment(order: CreatedOrder) -> None:
    """Undo the charge: if the provider said paid, refund it (idempotency key) and record it."""
    if not await _transaction("check_refund", _refund_due, order.order_id):
        return
    refund_id = await request_refund(order.payment_id, order.total_cents)
    await _transaction("record_refund", _record_refund, order.order_id, refund_id)


@DBOS.step(name="cancel_shipment", retries_allowed=True, max_attempts=3, interval_seconds=0.5)
async def cancel_carrier_shipment(order_id: int) -> bool:
    return await services().shipping.cancel_shipment(f"order-{order_id}")


async def cancel_shipment(order_id: int) -> None:
    """Undo create_shipment: cancel it at the carrier (a shipment never booked is fine)."""
    if await cancel_carrier_shipment(order_id):
        await _transaction(
            "record_shipment_cancelled",
            _record_event,
            order_id,
            OrderEvent.SHIPMENT_CANCELLED,
            f"order-{order_id}",
        )


# --- the workflow ---------------------------------------------------------------------


@DBOS.workflow(name="checkout")
async def checkout_workflow(request: CheckoutRequest) -> str:
    """Take one order from cart to dispatch; on any failure, undo every step done so far.

    Returns the order's final status. The workflow ID is the checkout's idempotency key.
    """
    checkout_key = DBOS.workflow_id
    assert checkout_key is not None
    svc = services()
    saga = Saga()
    order: CreatedOrder | None = None
    published = False
    try:
        saga.on_rollback("CancelOrder", lambda reason: cancel_order(checkout_key, reason))
        order = await _transaction("create_order", _create_order, checkout_key, request)

        saga.on_rollback("ReleaseReservation", lambda _: release_inventory(order.order_id))
        short = await _transaction("reserve_inventory", _reserve_inventory, order.order_id)
        if short:
            raise CheckoutFailed(CancelReason.OUT_OF_STOCK, short)

        deadline = await _transaction(
            "open_payment", _open_payment, order.order_id, svc.payment_timeout_s
        )
        payment_url = await register_payment(order, deadline)
        await DBOS.set_event_async(
            CHECKOUT_EVENT, _outcome(order, request, OrderStatus.PENDING, payment_url)
        )
        published = True

        saga.on_rollback("RefundPayment", lambda _: refund_payment(order))
        # The webhook's message only wakes us up: the verdict itself was written to the
        # order row by the webhook, and charge_payment reads it from there.
        await DBOS.recv_async(PAYMENT_TOPIC, timeout_seconds=max(0.0, deadline - time.time()))
        verdict = await _transaction("charge_payment", _charge_payment, order.order_id)
        if verdict is not PaymentVerdict.PAID:
            raise CheckoutFailed(_reason_for(verdict))

        saga.on_rollback("CancelShipment", lambda _: cancel_shipment(order.order_id))
        tracking = await _ship(order)

        eta = await _transaction("mark_paid", _mark_paid, order.order_id, tracking, svc.dispatch_s)
        await DBOS.sleep_async(max(0.0, eta - time.time()))
        await _transaction("complete_dispatch", _complete_dispatch, order.order_id)
        return OrderStatus.DISPATCHED.value
    except CheckoutFailed as failure:
        reason, short = failure.reason, failure.short
    except UnknownProduct:
        reason, short = CancelReason.INTERNAL_ERROR, ()
    except Exception as error:  # a bug or an outage past every retry: still compensate
        DBOS.logger.exception("checkout %s failed unexpectedly: %r", checkout_key, error)
        reason, short = CancelReason.INTERNAL_ERROR, ()

    await saga.rollback(reason.value)
    if order is not None:
        await _transaction(
            "record_checkout_failed", _record_event, order.order_id, OrderEvent.FAILED, reason.value
        )
    if not published:
        await DBOS.set_event_async(
            CHECKOUT_EVENT,
            _outcome(order, request, OrderStatus.CANCELLED, None, reason, short),
        )
    return OrderStatus.CANCELLED.value


async def _ship(order: CreatedOrder) -> str:
    try:
        return await create_shipment(order.order_id, order.shipping_address)
    except (ShippingRejected, DBOSMaxStepRetriesExceeded) as error:
        await _transaction(
            "record_shipment_failed",
            _record_event,
            order.order_id,
            OrderEvent.SHIPMENT_FAILED,
            str(error)[:500],
        )
        raise CheckoutFailed(CancelReason.SHIPPING_FAILED) from error


def _outcome(
    order: CreatedOrder | None,
    request: CheckoutRequest,
    status: OrderStatus,
    payment_url: str | None,
    reason: CancelReason | None = None,
    short: tuple[ShortItem, ...] = (),
) -> CheckoutOutcome:
    return CheckoutOutcome(
        order_id=order.order_id if order else None,
        payment_id=order.payment_id if order else None,
        status=status,
        fingerprint=request.fingerprint(),
        payment_url=payment_url,
        cancel_reason=reason.value if reason else None,
        short_items=short,
    )


# --- the saga's doors: what the HTTP routes call --------------------------------------


async def start_checkout(checkout_key: str, request: CheckoutRequest) -> CheckoutOutcome:
    """Start (or find) the checkout for this key and wait until stock is held or refused."""
    try:
        with SetWorkflowID(checkout_key):
            await DBOS.start_workflow_async(checkout_workflow, request)
    except DBOSConflictingWorkflowError:
        raise IdempotencyConflict(
            "this idempotency key is already used for something else"
        ) from None
    outcome: CheckoutOutcome | None = await DBOS.get_event_async(
        checkout_key, CHECKOUT_EVENT, timeout_seconds=CHECKOUT_REPLY_TIMEOUT_S
    )
    if outcome is None:
        raise CheckoutStillStarting(
            "the checkout is still starting; retry with the same idempotency key"
        )
    if outcome.fingerprint != request.fingerprint():
        raise IdempotencyConflict(
            "this idempotency key was used for a different checkout request",
            order_id=outcome.order_id,
        )
    if outcome.order_id is None:
        raise UnknownProduct([i.product_id for i in request.items])
    if outcome.short_items:
        raise OutOfStock(outcome.order_id, outcome.short_items)
    return outcome


async def accept_payment_verdict(
    payment_id: str, verdict: PaymentVerdict, event_id: str, amount_cents: int
) -> dict[str, Any]:
    """Apply the provider's webhook: decide the payment once, then wake the workflow.

    The verdict is written to the order row by a conditional UPDATE before the message
    is sent, so a crash in between loses nothing: the workflow reads the verdict from
    the row when it wakes (at the latest at its deadline), and the provider's retry of
    the same event re-sends the message under the same idempotency key.
    """
    engine = services().datasource.engine
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        order = await queries.order_by_payment(conn, payment_id)
        if order is None:
            raise PaymentNotFound(f"unknown payment {payment_id}")
        if amount_cents != order.total_cents:
            raise PaymentAmountMismatch(
                f"amount {amount_cents} does not match the order total {order.total_cents}"
            )
        if not await queries.claim_verdict(conn, payment_id, verdict, event_id, now):
            current = await queries.order_by_payment(conn, payment_id)
            repeated = (
                current.payment_event_id == event_id and current.payment_verdict == verdict.value
            )
            if not repeated:
                raise PaymentClosed(
                    _closed_message(current, now), order=queries.order_state(current)
                )
    await DBOS.send_async(
        order.checkout_key, verdict.value, PAYMENT_TOPIC, idempotency_key=event_id
    )
    return {"order_id": order.order_id, "status": verdict.value}


def _closed_message(order: Any, now: datetime) -> str:
    if order.payment_verdict in (None, ""):
        return "this order is not waiting for a payment"
    if order.payment_verdict != PaymentVerdict.AWAITING.value:
        return f"the payment was already decided: {order.payment_verdict}"
    return "the payment deadline has passed"
