"""THE SAGA: the checkout workflow, the watchdog's resolving workflow, and their undos.

One DBOS workflow per order; its workflow ID is the client's idempotency key. In order,
each step's compensation registered before it runs (`steps.py` has the steps):

    place_order      create the order, hold its stock, open its payment, register it
                     at the provider              -> CancelOrder, ReleaseReservation,
                                                      RefundPayment (refund or void)
    wait             DBOS.recv until the webhook's message or the payment deadline;
                     the deadline alone runs expire_payment
    ship_order       book the shipment, mark the order PAID -> CancelShipment
    dispatch         a durable sleep, then complete_dispatch: DISPATCHED

The webhook decides the payment and records the capture before it wakes the workflow
(`service.accept_payment_verdict`), so the paid path needs no step of its own for it.
A failure anywhere runs the registered compensations newest first (`saga.Saga`), and
the order ends CANCELLED with the reason. A paid purchase costs nine durable
operations: the start, place_order, the recv (its deadline's timer and its message),
the webhook's send, ship_order, the sleep, complete_dispatch and the completion
(README, "The checkout saga").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dbos import DBOS, error

from widget_store import faults, order_watch, steps
from widget_store.checkpoints import Checkpoint, Topic, Workflow
from widget_store.domain import (
    CancelReason,
    CheckoutRequest,
    OrderEvent,
    OrderStatus,
    PaymentVerdict,
    UnfinishedOrder,
    UnknownProduct,
    reason_for,
)
from widget_store.durability import services, sleep_until
from widget_store.logs import name_for_the_rest
from widget_store.saga import Saga

# --- the compensations, once, in the order of the steps they undo -----------------------

UndoStep = Callable[[str, str], Awaitable[object]]  # (checkout key, reason)


def _reason_only(undo: Callable[[str], Awaitable[object]]) -> UndoStep:
    return lambda checkout_key, _reason: undo(checkout_key)


COMPENSATIONS: tuple[tuple[OrderEvent, UndoStep], ...] = (
    (OrderEvent.ORDER_CANCELLED, steps.cancel_order),  # undoes create_order
    (OrderEvent.RESERVATION_RELEASED, _reason_only(steps.release_inventory)),
    (OrderEvent.PAYMENT_REFUNDED, _reason_only(steps.refund_payment)),  # open_payment, charge
    (OrderEvent.SHIPMENT_CANCELLED, _reason_only(steps.cancel_shipment)),  # create_shipment
)


@dataclass(slots=True)
class Compensations:
    """Registers the table's undos on a saga, in step order, each once."""

    saga: Saga
    checkout_key: str
    registered: int = 0

    def through(self, last: OrderEvent) -> None:
        """Register every undo up to and including `last` (before its step runs)."""
        names = [name for name, _ in COMPENSATIONS]
        for name, undo in COMPENSATIONS[self.registered : names.index(last) + 1]:
            self.saga.on_rollback(name.value, undo, self.checkout_key)
        self.registered = max(self.registered, names.index(last) + 1)


class ParkedCompensations:
    """The saga's dead-letter policy for one order: park, wait for a retry, resolve.

    A parked compensation is recorded in `dead_letters` and in the order's log; the
    workflow then waits on a DBOS topic for an operator's Retry, or retries by itself
    after `dead_letter_retry_s`. It stays PENDING meanwhile, so the order never ends
    half-compensated without somebody being able to see it.
    """

    __slots__ = ("order_id", "workflow_id")  # held by every waiting checkout

    def __init__(self, order_id: int, workflow_id: str) -> None:
        self.order_id = order_id
        self.workflow_id = workflow_id

    async def park(self, compensation: str, error: str, attempts: int) -> None:
        await steps.park_compensation(
            self.order_id, self.workflow_id, compensation, error, attempts
        )
        await DBOS.recv_async(
            Topic.COMPENSATION_RETRY, timeout_seconds=services().dead_letter_retry_s
        )
        await steps.retry_compensation(self.order_id, compensation)

    async def resolved(self, compensation: str) -> None:
        await steps.resolve_compensation(self.order_id, compensation)


def new_saga() -> Saga:
    return Saga(park_after=services().compensation_attempts)


class CheckoutFailed(Exception):
    def __init__(self, reason: CancelReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


# --- the checkout ---------------------------------------------------------------------


@DBOS.workflow(name=Workflow.CHECKOUT.value)
async def checkout_workflow(request: CheckoutRequest) -> str:
    """Take one order from cart to dispatch; on any failure, undo every step done so far.

    Returns the order's final status. The workflow ID is the checkout's idempotency key.
    """
    checkout_key = DBOS.workflow_id
    assert checkout_key is not None
    saga = new_saga()
    undo = Compensations(saga, checkout_key)
    try:
        # RefundPayment before place_order: the provider call inside it may time out
        # having opened the payment, and only an undo keyed by the payment puts it right.
        undo.through(OrderEvent.PAYMENT_REFUNDED)
        placed = await steps.place_order(checkout_key, request)
        order = placed.order
        name_for_the_rest(order_id=order.order_id)  # in this workflow's logs and spans
        saga.use_dead_letters(ParkedCompensations(order.order_id, checkout_key))
        if placed.payment_deadline is None:
            raise CheckoutFailed(CancelReason.OUT_OF_STOCK)

        message = await DBOS.recv_async(
            Topic.PAYMENT, timeout_seconds=max(0.0, placed.payment_deadline - time.time())
        )
        faults.after_step(Checkpoint.AWAIT_PAYMENT)
        # The webhook decided the payment in the order row before sending: its message
        # is that verdict. No message means the deadline passed.
        if message in (PaymentVerdict.PAID, PaymentVerdict.FAILED):
            verdict = PaymentVerdict(message)
        else:
            verdict = await steps.expire_payment(order.order_id)
        if verdict is not PaymentVerdict.PAID:
            raise CheckoutFailed(reason_for(verdict))

        undo.through(OrderEvent.SHIPMENT_CANCELLED)
        shipment = await steps.ship_order(order)
        if not shipment.shipped:
            raise CheckoutFailed(CancelReason.SHIPPING_FAILED)
        if shipment.dispatch_s > 0:  # recorded in ship_order's output: replays agree
            await sleep_until(shipment.dispatch_until)
        faults.after_step(Checkpoint.DISPATCH)
        await steps.complete_dispatch(order.order_id)
        return OrderStatus.DISPATCHED.value
    except CheckoutFailed as failure:
        reason = failure.reason
    except UnknownProduct:  # the route checks the catalog first; a product may vanish since
        reason = CancelReason.UNKNOWN_PRODUCT
    except (error.DBOSUnexpectedStepError, error.DBOSStepNondeterminismError):
        # The code no longer matches this workflow's history. Compensating blind could
        # undo an order that already shipped: stop, and leave it to an operator.
        raise
    except Exception as failure:  # a bug, or an outage past every retry: still compensate
        DBOS.logger.exception("checkout %s failed unexpectedly: %r", checkout_key, failure)
        reason = CancelReason.INTERNAL_ERROR

    await saga.rollback(reason.value)  # ends with cancel_order, which logs checkout_failed
    order_watch.announce(checkout_key)  # a refusal before any order: wake the request
    return OrderStatus.CANCELLED.value


# --- the watchdog's resolution ------------------------------------------------------------


@DBOS.workflow(name=Workflow.RESOLVE_ORDER.value)
async def resolve_order(order: UnfinishedOrder) -> str:
    """End an order whose workflow ended without ending it: finish it or undo it.

    An order already PAID (money captured, shipment booked) is completed; anything
    earlier is compensated from the state in the database. Every undo is defined for
    the case where its step never ran, so all of them are registered.
    """
    current = await steps.read_order_status(order.order_id)
    if current == OrderStatus.PAID.value:
        await steps.complete_dispatch(order.order_id)
        return OrderStatus.DISPATCHED.value
    saga = new_saga()
    saga.use_dead_letters(ParkedCompensations(order.order_id, DBOS.workflow_id or ""))
    Compensations(saga, order.checkout_key).through(OrderEvent.SHIPMENT_CANCELLED)
    await saga.rollback(CancelReason.STALLED.value)
    return OrderStatus.CANCELLED.value
