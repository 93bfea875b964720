"""Version 0.1's checkout and resolving workflows, step for step, for the ones in flight.

Version 0.1 (commit 67e32ed) ran `checkout` and `resolve_order` with these steps, in
this order; a checkout it started replays them here after an upgrade, whatever it was
doing: waiting for payment, retrying a shipment, asleep in dispatch, compensating.
The names, the order and the branches are version 0.1's; the bodies are today's
idempotent ones where they mean the same thing. Two bodies are better than they were,
on purpose: a refund of a payment the provider never captured now voids it (0.1 retried
it until it was parked), and every log entry is once-only.

Version 0.1 ran its database steps as datasource transactions; they replay here as
plain steps of the same name, which read the same checkpoint from DBOS's history.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from dbos import DBOS, error

from widget_store import faults, order_watch, queries, steps
from widget_store.checkout import ParkedCompensations, new_saga
from widget_store.checkpoints import Checkpoint, Topic, Workflow
from widget_store.domain import (
    CancelReason,
    CheckoutOutcome,
    CheckoutRequest,
    CreatedOrder,
    OrderEvent,
    OrderStatus,
    PaymentState,
    PaymentVerdict,
    Shipment,
    ShippingRejected,
    UnfinishedOrder,
    UnknownProduct,
    reason_for,
)
from widget_store.durability import attempt, services, sleep_until, step, write
from widget_store.payments import PaymentRequest
from widget_store.saga import Saga
from widget_store.shipping import Cancellation

CHECKOUT_EVENT = "checkout"  # 0.1 published the route's answer as this DBOS event


class _Failed(Exception):
    def __init__(self, reason: CancelReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@step(Checkpoint.REGISTER_PAYMENT, retries_allowed=True, max_attempts=8, interval_seconds=0.5)
async def register_payment(order: CreatedOrder, expires_at: float) -> str:
    """Open the payment at the provider (once per payment ID); returns its page."""
    async with services().engine.connect() as db:
        row = await queries.order_by_id(db, order.order_id)
    url = await services().payments.create_payment(
        PaymentRequest(
            payment_id=order.payment_id,
            order_id=order.order_id,
            amount_cents=order.total_cents,
            description=f"Widget Store order #{order.order_id}",
            expires_at_epoch=expires_at,
            return_url=steps.order_url(order.order_id, row.access_token),
        )
    )
    async with write() as db:
        await queries.set_payment_url(db, order.order_id, url)
    return url


@step(Checkpoint.CHARGE_PAYMENT)
async def charge_payment(order_id: int) -> PaymentVerdict:
    """Settle the verdict (none by now means timed out) and record a captured payment."""
    async with write() as db:
        verdict = await queries.close_verdict(db, order_id)
        if verdict is PaymentVerdict.PAID:
            if await queries.set_payment_state(
                db, order_id, old=(None,), new=PaymentState.CAPTURED.value
            ):
                await queries.append_event(db, order_id, OrderEvent.CHARGED)
        else:
            reason = reason_for(verdict).value
            await queries.append_event(db, order_id, OrderEvent.CHARGE_FAILED, reason)
    order_watch.announce(order_id)
    return verdict


def _is_transient(failure: BaseException) -> bool:
    return not isinstance(failure, ShippingRejected)


@step(
    Checkpoint.CREATE_SHIPMENT,
    retries_allowed=True,
    max_attempts=5,
    interval_seconds=0.2,
    backoff_rate=2.0,
    should_retry=_is_transient,
)
async def create_shipment(order_id: int, address: str) -> Shipment:
    """Book the shipment (once per key); transient failures retried by DBOS."""
    tracking = await services().shipping.create_shipment(steps.shipment_key(order_id), address)
    return Shipment(tracking, attempts=attempt() + 1)


async def _log(order_id: int, event: OrderEvent, detail: str) -> None:
    async with write() as db:
        await queries.append_event(db, order_id, event, detail)
    order_watch.announce(order_id)


@step(Checkpoint.RECORD_SHIPMENT_FAILED)
async def record_shipment_failed(order_id: int, detail: str) -> None:
    """Log the carrier's refusal (once-only)."""
    await _log(order_id, OrderEvent.SHIPMENT_FAILED, detail)


@step(Checkpoint.RECORD_SHIPMENT_CANCELLED)
async def record_shipment_cancelled(order_id: int) -> None:
    """Log the cancelled shipment (once-only)."""
    await _log(order_id, OrderEvent.SHIPMENT_CANCELLED, steps.shipment_key(order_id))


@step(Checkpoint.MARK_PAID)
async def mark_paid(order_id: int, shipment: Shipment) -> float:
    """PENDING -> PAID with its tracking number; returns when dispatch will be done."""
    dispatch_s = services().dispatch_s
    async with write() as db:
        eta = time.time() + dispatch_s
        if await queries.set_status(
            db,
            order_id,
            old=OrderStatus.PENDING,
            new=OrderStatus.PAID,
            tracking_number=shipment.tracking_number,
            dispatch_eta=datetime.fromtimestamp(eta, UTC),
        ):
            tries = "" if shipment.attempts == 1 else f" (after {shipment.attempts} attempts)"
            detail = f"{shipment.tracking_number}{tries}"
            await queries.append_event(db, order_id, OrderEvent.SHIPMENT_CREATED, detail)
            await queries.append_event(
                db, order_id, OrderEvent.DISPATCH_STARTED, f"{dispatch_s:g}s"
            )
        row = await queries.order_by_id(db, order_id)
    order_watch.announce(order_id)
    return float(row.dispatch_eta.timestamp())


# --- 0.1's compensations ------------------------------------------------------------------


@step(Checkpoint.CANCEL_SHIPMENT)
async def cancel_carrier_shipment(order_id: int) -> bool:
    """0.1's cancel_shipment: cancel at the carrier; True if a live shipment was cancelled."""
    answer = await services().shipping.cancel_shipment(steps.shipment_key(order_id))
    return answer is Cancellation.CANCELLED


async def cancel_shipment(order_id: int) -> None:
    if await cancel_carrier_shipment(order_id):
        await record_shipment_cancelled(order_id)


@step(Checkpoint.CHECK_REFUND)
async def check_refund(order_id: int) -> bool:
    """Whether a refund is due: the provider said paid and nothing was given back yet."""
    async with services().engine.connect() as db:
        verdict, state = await queries.payment_of(db, order_id)
    return verdict == PaymentVerdict.PAID.value and state != PaymentState.REFUNDED.value


@step(Checkpoint.REQUEST_REFUND)
async def request_refund(payment_id: str, amount_cents: int) -> str:
    """Give the payment back at the provider: refunded if captured, voided if not."""
    async with services().engine.connect() as db:
        order = await queries.order_by_payment(db, payment_id)
    undone = await steps.give_back_payment(order)
    return undone.detail


@step(Checkpoint.RECORD_REFUND)
async def record_refund(order_id: int, detail: str) -> None:
    """Record the refund once (a refund requested by 0.1 itself is recorded here)."""
    async with write() as db:
        await queries.set_payment_state(
            db, order_id, old=(None, PaymentState.CAPTURED), new=PaymentState.REFUNDED.value
        )
        await queries.append_event(db, order_id, OrderEvent.PAYMENT_REFUNDED, detail)
    order_watch.announce(order_id)


async def refund_payment(order: CreatedOrder) -> None:
    if not await check_refund(order.order_id):
        return
    detail = await request_refund(order.payment_id, order.total_cents)
    await record_refund(order.order_id, detail)


def _register_undos(saga: Saga, checkout_key: str) -> None:
    saga.on_rollback("CancelOrder", lambda reason: steps.cancel_order(checkout_key, reason))
    saga.on_rollback("ReleaseReservation", lambda _: steps.release_inventory(checkout_key))


# --- the workflows ------------------------------------------------------------------------


@DBOS.workflow(name=Workflow.CHECKOUT_V1.value)
async def checkout_workflow(request: CheckoutRequest) -> str:
    """Version 0.1's checkout, for the ones it started."""
    checkout_key = DBOS.workflow_id
    assert checkout_key is not None
    saga = new_saga()
    published = False
    order: CreatedOrder | None = None
    try:
        _register_undos(saga, checkout_key)
        outcome = await steps.place_order(checkout_key, request)
        order = placed = outcome.order
        saga.use_dead_letters(ParkedCompensations(placed.order_id, checkout_key))
        if outcome.payment_deadline is None:
            raise _Failed(CancelReason.OUT_OF_STOCK)
        deadline = outcome.payment_deadline
        payment_url = await register_payment(placed, deadline)
        await DBOS.set_event_async(
            CHECKOUT_EVENT, _outcome(placed, request, OrderStatus.PENDING, payment_url)
        )
        published = True
        faults.after_step(Checkpoint.PUBLISH_CHECKOUT)

        saga.on_rollback("RefundPayment", lambda _: refund_payment(placed))
        await DBOS.recv_async(Topic.PAYMENT, timeout_seconds=max(0.0, deadline - time.time()))
        faults.after_step(Checkpoint.AWAIT_PAYMENT)
        verdict = await charge_payment(placed.order_id)
        if verdict is not PaymentVerdict.PAID:
            raise _Failed(reason_for(verdict))

        saga.on_rollback("CancelShipment", lambda _: cancel_shipment(placed.order_id))
        try:
            shipment = await create_shipment(placed.order_id, placed.shipping_address)
        except (ShippingRejected, error.DBOSMaxStepRetriesExceeded) as refused:
            await record_shipment_failed(placed.order_id, str(refused)[:500])
            raise _Failed(CancelReason.SHIPPING_FAILED) from refused
        dispatched_at = await mark_paid(placed.order_id, shipment)
        await sleep_until(dispatched_at)
        faults.after_step(Checkpoint.DISPATCH)
        await steps.complete_dispatch(placed.order_id)
        return OrderStatus.DISPATCHED.value
    except _Failed as failure:
        reason = failure.reason
    except UnknownProduct:
        reason = CancelReason.UNKNOWN_PRODUCT
    except (error.DBOSUnexpectedStepError, error.DBOSStepNondeterminismError):
        raise
    except Exception as failure:
        DBOS.logger.exception("checkout %s failed unexpectedly: %r", checkout_key, failure)
        reason = CancelReason.INTERNAL_ERROR

    await saga.rollback(reason.value)
    if not published:
        await DBOS.set_event_async(
            CHECKOUT_EVENT, _outcome(order, request, OrderStatus.CANCELLED, None, reason)
        )
    order_watch.announce(checkout_key)
    return OrderStatus.CANCELLED.value


def _outcome(
    order: CreatedOrder | None,
    request: CheckoutRequest,
    status: OrderStatus,
    payment_url: str | None,
    reason: CancelReason | None = None,
) -> CheckoutOutcome:
    return CheckoutOutcome(
        order_id=order.order_id if order else None,
        payment_id=order.payment_id if order else None,
        status=status,
        fingerprint=request.fingerprint(),
        payment_url=payment_url,
        cancel_reason=reason.value if reason else None,
    )


@DBOS.workflow(name=Workflow.RESOLVE_ORDER_V1.value)
async def resolve_order(order: UnfinishedOrder) -> str:
    """Version 0.1's resolving workflow, for the ones its watchdog started."""
    current = await steps.read_order_status(order.order_id)
    if current == OrderStatus.PAID.value:
        await steps.complete_dispatch(order.order_id)
        return OrderStatus.DISPATCHED.value
    placed = CreatedOrder(
        order.order_id, order.payment_id, order.total_cents, order.shipping_address
    )
    saga = new_saga()
    saga.use_dead_letters(ParkedCompensations(order.order_id, DBOS.workflow_id or ""))
    _register_undos(saga, order.checkout_key)
    saga.on_rollback("RefundPayment", lambda _: refund_payment(placed))
    saga.on_rollback("CancelShipment", lambda _: cancel_shipment(order.order_id))
    await saga.rollback(CancelReason.STALLED.value)
    return OrderStatus.CANCELLED.value
