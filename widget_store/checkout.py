"""THE SAGA: the checkout workflow, and the two doors the HTTP routes come in by.

One DBOS workflow per order; its workflow ID is the client's idempotency key. The steps
(in `steps.py`), in order, each with its compensation registered before it runs:

    create_order        -> cancel_order         (status CANCELLED, with the reason)
    reserve_inventory   -> release_inventory    (stock back on the shelf)
    open_payment, register_payment, then wait for the provider's verdict
        (the first three touch only the store's tables and share one transaction)
    charge_payment      -> refund_payment       (provider refund, idempotency key)
    create_shipment     -> cancel_shipment      (carrier cancellation)
    mark_paid, a durable sleep while the order is dispatched, complete_dispatch

A failure anywhere runs the registered compensations newest first (`saga.Saga`), and the
order ends CANCELLED with the reason; otherwise it ends DISPATCHED.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS, PropagateOtelContext, SetWorkflowID
from dbos._core import WorkflowHandleAsyncTask
from dbos._error import (
    DBOSConflictingWorkflowError,
    DBOSMaxStepRetriesExceeded,
    DBOSStepNondeterminismError,
    DBOSUnexpectedStepError,
)

from widget_store import faults, metrics, queries, tracing
from widget_store.dead_letters import ParkedCompensations
from widget_store.domain import (
    CancelReason,
    CheckoutOutcome,
    CheckoutRejected,
    CheckoutRequest,
    CheckoutStillStarting,
    CreatedOrder,
    IdempotencyConflict,
    OrderEvent,
    OrderStatus,
    OutOfStock,
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    PaymentVerdict,
    Shipment,
    ShortItem,
    UnknownProduct,
)
from widget_store.logs import log_context
from widget_store.saga import Saga
from widget_store.shipping import ShippingRejected
from widget_store.steps import (
    cancel_order,
    cancel_shipment,
    charge_payment,
    complete_dispatch,
    create_shipment,
    mark_paid,
    place_order,
    reason_for,
    record_event,
    refund_payment,
    register_payment,
    release_inventory,
    services,
)

CHECKOUT_EVENT = "checkout"  # set once stock is held (or refused): the route's answer
PAYMENT_TOPIC = "payment"  # the webhook's wake-up call to the waiting workflow
CHECKOUT_REPLY_TIMEOUT_S = 30.0
CHECKOUT_REPLY_SLICE_S = 2.0


class CheckoutFailed(Exception):
    def __init__(self, reason: CancelReason, short: tuple[ShortItem, ...] = ()) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.short = short


# --- the workflow ---------------------------------------------------------------------


@DBOS.workflow(name="checkout")
async def checkout_workflow(request: CheckoutRequest) -> str:
    """Take one order from cart to dispatch; on any failure, undo every step done so far.

    Returns the order's final status. The workflow ID is the checkout's idempotency key.
    """
    checkout_key = DBOS.workflow_id
    assert checkout_key is not None
    svc = services()
    saga = Saga(park_after=svc.compensation_attempts)
    order: CreatedOrder | None = None
    published = False
    try:
        saga.on_rollback("CancelOrder", lambda reason: cancel_order(checkout_key, reason))
        saga.on_rollback("ReleaseReservation", lambda _: release_inventory(checkout_key))
        outcome = await place_order(checkout_key, request)
        order = placed = outcome.order
        saga.use_dead_letters(ParkedCompensations(placed.order_id, checkout_key))
        if outcome.payment_deadline is None:
            raise CheckoutFailed(CancelReason.OUT_OF_STOCK, outcome.short)
        deadline = outcome.payment_deadline
        payment_url = await register_payment(placed, deadline)
        await DBOS.set_event_async(
            CHECKOUT_EVENT, _outcome(placed, request, OrderStatus.PENDING, payment_url)
        )
        published = True
        faults.after_step("publish_checkout")

        saga.on_rollback("RefundPayment", lambda _: refund_payment(placed))
        # The webhook's message only wakes us up: the webhook wrote the verdict to the
        # order row first, and charge_payment reads it from there.
        await DBOS.recv_async(PAYMENT_TOPIC, timeout_seconds=max(0.0, deadline - time.time()))
        faults.after_step("await_payment")
        verdict = await charge_payment(placed.order_id)
        if verdict is not PaymentVerdict.PAID:
            raise CheckoutFailed(reason_for(verdict))

        saga.on_rollback("CancelShipment", lambda _: cancel_shipment(placed.order_id))
        shipment = await _ship(placed)

        dispatched_at = await mark_paid(placed.order_id, shipment)
        await _sleep_until(dispatched_at)
        faults.after_step("dispatch")
        await complete_dispatch(placed.order_id)
        return OrderStatus.DISPATCHED.value
    except CheckoutFailed as failure:
        reason, short = failure.reason, failure.short
    except UnknownProduct:  # the route checks the catalog first; a product may vanish since
        reason, short = CancelReason.UNKNOWN_PRODUCT, ()
    except (DBOSUnexpectedStepError, DBOSStepNondeterminismError):
        # The code no longer matches this workflow's history. Compensating blind could
        # undo an order that already shipped: stop, and leave it to an operator.
        raise
    except Exception as error:  # a bug, or an outage past every retry: still compensate
        DBOS.logger.exception("checkout %s failed unexpectedly: %r", checkout_key, error)
        reason, short = CancelReason.INTERNAL_ERROR, ()

    await saga.rollback(reason.value)  # ends with cancel_order, which logs checkout_failed
    if not published:
        await DBOS.set_event_async(
            CHECKOUT_EVENT, _outcome(order, request, OrderStatus.CANCELLED, None, reason, short)
        )
    return OrderStatus.CANCELLED.value


async def _sleep_until(epoch_s: float) -> None:
    """A durable sleep until an absolute time, always checkpointed as one step.

    DBOS skips a sleep of zero seconds without recording it, so a replay that computes
    "no time left" would take one step fewer than the first run did; hence the floor.
    On replay DBOS wakes at the time recorded first, whatever duration is passed.
    """
    await DBOS.sleep_async(max(0.001, epoch_s - time.time()))


async def _ship(order: CreatedOrder) -> Shipment:
    try:
        return await create_shipment(order.order_id, order.shipping_address)
    except (ShippingRejected, DBOSMaxStepRetriesExceeded) as error:
        detail = str(error)[:500]
        await record_event(
            "record_shipment_failed", order.order_id, OrderEvent.SHIPMENT_FAILED, detail
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
        # PropagateOtelContext stores the trace with the workflow: recovered elsewhere
        # after a crash, it rejoins the checkout's trace (a no-op with tracing off).
        with (
            SetWorkflowID(checkout_key),
            PropagateOtelContext(),
            log_context(checkout_key=checkout_key),
        ):
            handle = await DBOS.start_workflow_async(checkout_workflow, request)
        # DBOS runs the workflow here only when this call inserted it (a retry of the key
        # gets a polling handle): count each new checkout once.
        if isinstance(handle, WorkflowHandleAsyncTask):
            metrics.checkout_started()
    except DBOSConflictingWorkflowError:
        raise IdempotencyConflict(
            "this idempotency key is already used for something else"
        ) from None
    outcome = await _checkout_outcome(checkout_key)
    if outcome is None:
        raise CheckoutStillStarting(
            "the checkout is still starting; retry with the same idempotency key"
        )
    if outcome.fingerprint != request.fingerprint():
        raise IdempotencyConflict(
            "this idempotency key was used for a different checkout request",
            order_id=outcome.order_id,
        )
    if outcome.short_items and outcome.order_id is not None:
        raise OutOfStock(outcome.order_id, outcome.short_items)
    if outcome.status is OrderStatus.CANCELLED and outcome.payment_url is None:
        raise CheckoutRejected(
            f"the checkout was refused: {outcome.cancel_reason}", order_id=outcome.order_id
        )
    return outcome


async def _checkout_outcome(checkout_key: str) -> CheckoutOutcome | None:
    """Wait for the workflow to publish its outcome, in short slices.

    DBOS wakes `get_event` by LISTEN/NOTIFY, and a notification sent while PostgreSQL was
    restarting is lost; each slice ends with a read of the event itself, so a lost
    notification costs a slice, not the whole wait.
    """
    deadline = time.monotonic() + CHECKOUT_REPLY_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        outcome: CheckoutOutcome | None = await DBOS.get_event_async(
            checkout_key, CHECKOUT_EVENT, timeout_seconds=min(CHECKOUT_REPLY_SLICE_S, remaining)
        )
        if outcome is not None or remaining <= CHECKOUT_REPLY_SLICE_S:
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
    repeated = False
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
    await tracing.link_to_workflow(order.checkout_key)
    await DBOS.send_async(
        order.checkout_key, verdict.value, PAYMENT_TOPIC, idempotency_key=event_id
    )
    # `duplicate` is for the route's metrics; the reply is the same either way.
    return {"order_id": order.order_id, "status": verdict.value, "duplicate": repeated}


def _closed_message(order: Any, now: datetime) -> str:
    if order.payment_verdict in (None, ""):
        return "this order is not waiting for a payment"
    if order.payment_verdict != PaymentVerdict.AWAITING.value:
        return f"the payment was already decided: {order.payment_verdict}"
    return "the payment deadline has passed"
