"""The checkout saga's steps and compensations, each one durable and idempotent.

Database steps run as DBOS datasource transactions: the step's writes, its entry in the
order event log and its checkpoint commit together, exactly once. Calls to the outside
world (payment provider, carrier) are DBOS steps, made idempotent by keys the outside
honours. Every compensation is safe to run when its step never ran.

The checkpoint names given here (`"place_order"`, ...) are part of the durable format:
renaming one breaks the recovery of checkouts in flight at the time.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar

from dbos import DBOS, AsyncSQLAlchemyDatasource
from sqlalchemy.ext.asyncio import AsyncSession

from widget_store import faults, order_watch, queries
from widget_store.domain import (
    CancelReason,
    CheckoutRequest,
    CreatedOrder,
    OrderEvent,
    OrderStatus,
    PaymentVerdict,
    PlacedOrder,
    Shipment,
    ShortItem,
    describe_shortages,
    order_total,
    price_lines,
)
from widget_store.payments import PaymentProvider, PaymentRequest
from widget_store.shipping import ShippingRejected, ShippingService

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CheckoutServices:
    """What the steps talk to. DBOS workflows and steps are module-level functions, so
    the app installs these once at start-up rather than passing them to every call."""

    datasource: AsyncSQLAlchemyDatasource
    payments: PaymentProvider
    shipping: ShippingService
    payment_timeout_s: float
    dispatch_s: float
    isolation_level: Literal["READ COMMITTED", "SERIALIZABLE"]
    compensation_attempts: int = 8  # failures before a compensation is parked
    dead_letter_retry_s: float = 3600.0  # a parked compensation retries by itself this often
    # What the watchdog needs to tell a live workflow from an orphan.
    app_version: str = ""
    executors: frozenset[str] = frozenset()
    stuck_after_s: float = 120.0


_services: CheckoutServices | None = None


def install(services: CheckoutServices) -> None:
    global _services
    _services = services


def services() -> CheckoutServices:
    if _services is None:
        raise RuntimeError("checkout services are not installed; create_app() installs them")
    return _services


async def transaction(
    name: str, body: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run `body` as one exactly-once datasource transaction, checkpointed as `name`.

    On PostgreSQL the isolation is READ COMMITTED: every write is a conditional UPDATE
    or a keyed insert, atomic without SERIALIZABLE's retries on hot stock rows.
    """
    svc = services()
    options: Any = {"name": name, "isolation_level": svc.isolation_level}
    if faults.failure_armed(name):
        body = _failing(name, body)
    with order_watch.collecting() as touched:
        result = await svc.datasource.run_tx_step_async(options, body, *args, **kwargs)
    order_watch.announce(touched)  # committed: wake whoever waits for news of these orders
    faults.after_step(name)
    return result


def _failing(
    name: str, body: Callable[P, Coroutine[Any, Any, R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`body`, made to raise the injected failure inside the transaction, so DBOS records it."""

    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        faults.fail_now(name)
        return await body(*args, **kwargs)

    return run


def session() -> AsyncSession:
    """The SQL session of the datasource transaction running now."""
    return services().datasource.sql_session()


def _step(
    name: str, **options: Any
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A DBOS step checkpointed as `name`, followed by the fault-injection hook."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def body(*args: P.args, **kwargs: P.kwargs) -> R:
            faults.fail_now(name)  # inside the step, so DBOS records an injected failure
            return await fn(*args, **kwargs)

        durable = DBOS.step(name=name, **options)(body)

        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            result = await durable(*args, **kwargs)
            faults.after_step(name)
            return result

        return run

    return decorate


# --- forward steps --------------------------------------------------------------------


async def place_order(checkout_key: str, request: CheckoutRequest) -> PlacedOrder:
    """create_order, reserve_inventory and open_payment, in one local transaction.

    The three touch only the store's own tables, so one transaction holds them together
    and saves two checkpoints per checkout; each keeps its compensation, and the log
    keeps an entry per step. Out of stock, the order stays PENDING with nothing held,
    for the saga to cancel.
    """
    timeout_s = services().payment_timeout_s
    return await transaction("place_order", _place_order, checkout_key, request, timeout_s)


async def _place_order(
    checkout_key: str, request: CheckoutRequest, timeout_s: float
) -> PlacedOrder:
    order = await _create_order(checkout_key, request)
    short = await _reserve_inventory(order.order_id)
    deadline = None if short else await _open_payment(order.order_id, timeout_s)
    return PlacedOrder(order, short, deadline)


async def _create_order(checkout_key: str, request: CheckoutRequest) -> CreatedOrder:
    """A PENDING order with its lines, prices frozen now. Once per key (unique column)."""
    db = session()
    prices = await queries.prices_of(db, [item.product_id for item in request.items])
    lines = price_lines(request.items, prices)
    total = order_total(lines)
    payment_id = f"pay_{secrets.token_hex(12)}"  # random, but checkpointed with the step
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
    """Hold stock for every line or none; returns the short lines (empty when held)."""
    db = session()
    short = await queries.reserve_stock(db, order_id)
    if short:
        await queries.append_event(
            db, order_id, OrderEvent.RESERVE_FAILED, describe_shortages(short)
        )
    else:
        await queries.append_event(db, order_id, OrderEvent.RESERVED)
    return tuple(short)


async def _open_payment(order_id: int, timeout_s: float) -> float:
    """Start waiting for the provider's verdict; returns the deadline (epoch seconds)."""
    db = session()
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    await queries.open_payment(db, order_id, deadline)
    await queries.append_event(
        db, order_id, OrderEvent.PAYMENT_OPENED, f"waiting until {deadline.isoformat()}"
    )
    return deadline.timestamp()


@_step("register_payment", retries_allowed=True, max_attempts=8, interval_seconds=0.5)
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


async def charge_payment(order_id: int) -> PaymentVerdict:
    """Settle the verdict (none by now means timed out) and record a captured payment."""
    return await transaction("charge_payment", _charge_payment, order_id)


async def _charge_payment(order_id: int) -> PaymentVerdict:
    db = session()
    verdict = await queries.close_verdict(db, order_id)
    if verdict is PaymentVerdict.PAID:
        if await queries.set_payment_state(db, order_id, old=None, new="captured"):
            await queries.append_event(db, order_id, OrderEvent.CHARGED)
    else:
        reason = reason_for(verdict)
        await queries.append_event(db, order_id, OrderEvent.CHARGE_FAILED, reason.value)
    return verdict


def reason_for(verdict: PaymentVerdict) -> CancelReason:
    if verdict is PaymentVerdict.FAILED:
        return CancelReason.PAYMENT_DECLINED
    return CancelReason.PAYMENT_TIMED_OUT


def _is_transient(error: BaseException) -> bool:
    """Everything but a rejected address is worth retrying: a carrier hiccup, a database
    blip. Only a permanent rejection may cancel a paid order."""
    return not isinstance(error, ShippingRejected)


@_step(
    "create_shipment",
    retries_allowed=True,
    max_attempts=5,
    interval_seconds=0.2,
    backoff_rate=2.0,
    should_retry=_is_transient,
)
async def create_shipment(order_id: int, address: str) -> Shipment:
    """Book the shipment (idempotent by key); transient failures retry with backoff."""
    tracking_number = await services().shipping.create_shipment(f"order-{order_id}", address)
    status = DBOS.step_status
    attempt = status.current_attempt if status and status.current_attempt is not None else 0
    return Shipment(tracking_number, attempts=attempt + 1)


async def record_event(name: str, order_id: int, event: OrderEvent, detail: str = "") -> None:
    """Append to the order's event log as a step of its own, checkpointed as `name`."""
    await transaction(name, _record_event, order_id, event, detail)


async def _record_event(order_id: int, event: OrderEvent, detail: str) -> None:
    await queries.append_event(session(), order_id, event, detail)


async def mark_paid(order_id: int, shipment: Shipment) -> float:
    """PENDING -> PAID with its tracking number; returns when dispatch will be done."""
    return await transaction("mark_paid", _mark_paid, order_id, shipment, services().dispatch_s)


async def _mark_paid(order_id: int, shipment: Shipment, dispatch_s: float) -> float:
    db = session()
    eta = datetime.now(UTC) + timedelta(seconds=dispatch_s)
    paid = await queries.set_status(
        db,
        order_id,
        old=OrderStatus.PENDING,
        new=OrderStatus.PAID,
        tracking_number=shipment.tracking_number,
        dispatch_eta=eta,
    )
    if paid:
        tries = "" if shipment.attempts == 1 else f" (after {shipment.attempts} attempts)"
        detail = f"{shipment.tracking_number}{tries}"
        await queries.append_event(db, order_id, OrderEvent.SHIPMENT_CREATED, detail)
        await queries.append_event(db, order_id, OrderEvent.DISPATCH_STARTED, f"{dispatch_s:g}s")
    return eta.timestamp()


async def complete_dispatch(order_id: int) -> None:
    """PAID -> DISPATCHED: the checkout is complete."""
    await transaction("complete_dispatch", _complete_dispatch, order_id)


async def _complete_dispatch(order_id: int) -> None:
    db = session()
    if await queries.set_status(db, order_id, old=OrderStatus.PAID, new=OrderStatus.DISPATCHED):
        await queries.append_event(db, order_id, OrderEvent.DISPATCHED)
        await queries.append_event(db, order_id, OrderEvent.COMPLETE)


# --- compensations, named for what they undo ------------------------------------------


async def cancel_order(checkout_key: str, reason: str) -> None:
    """Undo create_order: the order ends CANCELLED with the reason (if it exists).

    Always the last compensation to run, so it also writes the outcome to the log, in
    the same transaction: nobody sees a CANCELLED order whose history is unfinished.
    """
    await transaction("cancel_order", _cancel_order, checkout_key, reason)


async def _cancel_order(checkout_key: str, reason: str) -> None:
    db = session()
    order_id = await queries.cancel_order(db, checkout_key, reason)
    if order_id is not None:
        await queries.append_event(db, order_id, OrderEvent.ORDER_CANCELLED, reason)
        await queries.append_event(db, order_id, OrderEvent.FAILED, reason)


async def release_inventory(checkout_key: str) -> None:
    """Undo reserve_inventory: held stock goes back on the shelf, once (if any is held)."""
    await transaction("release_inventory", _release_inventory, checkout_key)


async def _release_inventory(checkout_key: str) -> None:
    db = session()
    order = await queries.order_by_key(db, checkout_key)
    if order is None:
        return
    released = await queries.release_stock(db, order.order_id)
    if released:
        detail = ", ".join(f"{line.quantity} x product {line.product_id}" for line in released)
        await queries.append_event(db, order.order_id, OrderEvent.RESERVATION_RELEASED, detail)


async def refund_payment(order: CreatedOrder) -> None:
    """Undo the charge: if the provider said paid, refund it (idempotency key), record it."""
    if not await transaction("check_refund", _refund_due, order.order_id):
        return
    refund_id = await request_refund(order.payment_id, order.total_cents)
    await transaction("record_refund", _record_refund, order.order_id, refund_id)


async def _refund_due(order_id: int) -> bool:
    verdict, state = await queries.payment_of(session(), order_id)
    return verdict == PaymentVerdict.PAID.value and state != "refunded"


@_step("request_refund")  # no retries here: the saga retries compensations, with backoff
async def request_refund(payment_id: str, amount_cents: int) -> str:
    """Ask the provider for a refund; the key makes a repeated request refund once."""
    return await services().payments.refund(payment_id, amount_cents, f"refund-{payment_id}")


async def _record_refund(order_id: int, refund_id: str) -> None:
    db = session()
    if await queries.mark_refunded(db, order_id):
        await queries.append_event(db, order_id, OrderEvent.PAYMENT_REFUNDED, refund_id)


async def cancel_shipment(order_id: int) -> None:
    """Undo create_shipment: cancel it at the carrier (one never booked is fine)."""
    if await cancel_carrier_shipment(order_id):
        await record_event(
            "record_shipment_cancelled",
            order_id,
            OrderEvent.SHIPMENT_CANCELLED,
            f"order-{order_id}",
        )


@_step("cancel_shipment")
async def cancel_carrier_shipment(order_id: int) -> bool:
    return await services().shipping.cancel_shipment(f"order-{order_id}")
