"""`widget-store node`'s saga: a checkout on the store's own steps, told as protocol messages.

One DBOS workflow (`node_checkout.v1`) per saga ID; its ID is `~node/<saga_id>`, a name
no checkout key of the store can take. It reuses the store's steps and compensations
(`steps.py`, through `checkout.COMPENSATIONS`), the `Saga` helper and its dead-letter
parking, on the store's tables:

    ReserveInventory   steps.place_order: the order, its stock held, its payment opened
    ChargePayment      charge_directly: the provider captures at once (no webhook wait)
    CreateShipment     steps.ship_order, then steps.complete_dispatch (no dispatch delay)
    undo, newest first CancelShipment, RefundPayment, ReleaseReservation: the store's
                       cancel_shipment, refund_payment, release_inventory; cancel_order last

Every batch of messages the saga sends is a step of its own (`say`), so a saga recovered
after a crash sends only the messages it had not sent; a crash between writing a batch
and checkpointing it sends that batch again (at least once, never lost). A compensation
is announced for each step that succeeded; the store's undo of a step that failed runs
too (its outcome may be unknown) and is recorded in the order's history, not announced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dbos import DBOS, error

from widget_store import node_protocol as protocol
from widget_store import order_watch, queries, steps
from widget_store.checkout import COMPENSATIONS, ParkedCompensations, new_saga
from widget_store.checkpoints import Checkpoint, Workflow
from widget_store.domain import (
    CheckoutRequest,
    CreatedOrder,
    OrderEvent,
    PaymentVerdict,
    Product,
    ShortItem,
    UnknownProduct,
)
from widget_store.durability import services, step, write
from widget_store.node_protocol import CheckoutMessage, Envelope
from widget_store.payments import Charge, PaymentProviderUnavailable
from widget_store.saga import Saga

# The seed's SKUs, added beside the store's catalog when the node starts (if missing).
NODE_CATALOG = (
    Product(0, "abc123", "Widget abc123", "The orchestrator's first widget.", 10000, 100),
    Product(0, "xyz789", "Widget xyz789", "The orchestrator's second widget.", 4999, 50),
)


@dataclass(frozen=True)
class NodeSaga:
    """The workflow's input (a stored format): the message, and the cart it names."""

    checkout: CheckoutMessage
    request: CheckoutRequest  # the same lines, by product ID
    skus: tuple[tuple[str, int], ...]  # (SKU, product ID) for each line

    def sku_of(self, product_id: int) -> str:
        return next(sku for sku, pid in self.skus if pid == product_id)


class Output(Protocol):
    def send(self, envelope: Envelope) -> None:
        """Write one message (the output numbers it)."""
        ...


_output: Output | None = None


def install_output(output: Output) -> None:
    """Where the sagas' messages go: the node's standard output."""
    global _output
    _output = output


def order_name(order_id: int) -> str:
    """The order as the protocol names it (the store's order 7 is `o7`)."""
    return f"o{order_id}"


class SagaAborted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the node's own steps ----------------------------------------------------------------


@step(Checkpoint.NODE_SAY)
async def say(envelopes: tuple[Envelope, ...]) -> None:
    """Send a batch of the saga's messages. Checkpointed, so a replay does not send it
    again; a crash after writing and before the checkpoint sends it once more."""
    if _output is None:
        raise RuntimeError("no output installed: node workflows run in `widget-store node`")
    for envelope in envelopes:
        _output.send(envelope)


def _provider_hiccup(failure: BaseException) -> bool:
    return isinstance(failure, PaymentProviderUnavailable)


@step(
    Checkpoint.CHARGE_DIRECTLY,
    retries_allowed=True,
    max_attempts=4,
    interval_seconds=0.2,
    should_retry=_provider_hiccup,
)
async def charge_directly(order: CreatedOrder, payer_id: str) -> Charge:
    """Charge the order's opened payment now, and record the verdict on the order.

    A second run changes nothing: the provider decides a payment once and answers that
    decision again; the verdict is claimed by one conditional UPDATE (awaiting -> paid |
    failed), and the log entry is once-only. What the order row holds is the answer, so
    a verdict the store did not take (its deadline had passed) is not reported paid:
    the rollback then refunds whatever the provider captured.
    """
    charges = services().charges
    if charges is None:
        raise RuntimeError("no direct charges installed: `widget-store node` installs them")
    charge = await charges.charge(order.payment_id, payer_id)
    verdict = PaymentVerdict.PAID if charge.captured else PaymentVerdict.FAILED
    async with write() as db:
        now = queries.utcnow()
        ref = charge.transaction_id or f"refused-{order.payment_id}"
        if await queries.claim_verdict(db, order.payment_id, verdict, ref, now):
            event = OrderEvent.CHARGED if charge.captured else OrderEvent.CHARGE_FAILED
            detail = charge.transaction_id if charge.captured else charge.decline_code
            await queries.append_event(db, order.order_id, event, detail)
        recorded, _ = await queries.payment_of(db, order.order_id)
    order_watch.announce(order.order_id)
    if charge.captured and recorded != PaymentVerdict.PAID:
        return Charge(False, error="payment_closed", decline_code="TOO_LATE")
    return charge


# --- the saga ------------------------------------------------------------------------------


@dataclass
class Told:
    """What the saga has said so far: which steps succeeded, and what they hold."""

    checkout: CheckoutMessage
    done: set[int] = field(default_factory=set)
    order: CreatedOrder | None = None
    held: list[dict[str, str]] = field(default_factory=list)

    def envelope(self, body: dict[str, Any]) -> Envelope:
        return Envelope(src=self.checkout.node, dest=self.checkout.client, body=body)

    async def say(self, *bodies: dict[str, Any]) -> None:
        await say(tuple(self.envelope(body) for body in bodies))

    def final(self, body: dict[str, Any]) -> dict[str, Any]:
        """The saga's last message, in reply to the checkout that started it."""
        if self.checkout.msg_id is None:
            return body
        return {**body, "in_reply_to": self.checkout.msg_id}


Undo = Callable[[str], Awaitable[object]]


def _announced(told: Told, step_number: int, undo: Undo) -> Undo:
    """The store's undo, announced (once, however often it is retried) when its step had
    succeeded; run silently otherwise."""
    announced: list[dict[str, Any]] = []

    async def run(reason: str) -> object:
        if step_number not in told.done:
            return await undo(reason)
        if not announced:
            announced.append(_undo_message(told, step_number))
            await told.say(announced[0])
        result = await undo(reason)
        await told.say(protocol.undone(announced[0]))
        return result

    return run


def _undo_message(told: Told, step_number: int) -> dict[str, Any]:
    saga_id = told.checkout.saga_id
    assert told.order is not None  # a step succeeded, so the order exists
    if step_number == protocol.RESERVE:
        return protocol.release_reservation(saga_id, told.held)
    if step_number == protocol.CHARGE:
        return protocol.refund_payment(saga_id, told.order.payment_id)
    return protocol.cancel_shipment(saga_id, steps.shipment_key(told.order.order_id))


# Which protocol step each of the store's compensations undoes (None: not a protocol step).
UNDOES = {
    OrderEvent.ORDER_CANCELLED: None,
    OrderEvent.RESERVATION_RELEASED: protocol.RESERVE,
    OrderEvent.PAYMENT_REFUNDED: protocol.CHARGE,
    OrderEvent.SHIPMENT_CANCELLED: protocol.SHIP,
}


def _register(saga: Saga, told: Told, checkout_key: str, *, through: OrderEvent) -> None:
    """Register the store's undos, in the store's order, up to and including `through`."""
    names = [name for name, _ in COMPENSATIONS]
    start = len(saga.pending)  # registered so far (nothing is rolled back before the end)
    for name, undo in COMPENSATIONS[start : names.index(through) + 1]:

        def bound(reason: str, undo: Any = undo) -> Awaitable[object]:
            return undo(checkout_key, reason)  # type: ignore[no-any-return]

        number = UNDOES[name]
        saga.on_rollback(name.value, bound if number is None else _announced(told, number, bound))


@DBOS.workflow(name=Workflow.NODE_CHECKOUT.value)
async def node_checkout_workflow(saga_input: NodeSaga) -> dict[str, Any]:
    """Run one saga from its checkout message to `checkout_complete` or `checkout_failed`.

    Returns the final message's body (without a reply address), which a repeated
    checkout of the same saga ID is answered with.
    """
    checkout_key = DBOS.workflow_id
    assert checkout_key is not None
    message = saga_input.checkout
    saga_id = message.saga_id
    told = Told(message)
    saga = new_saga()
    # As the store's checkout does: the payment's undo before place_order, whose provider
    # call may open the payment and then time out.
    _register(saga, told, checkout_key, through=OrderEvent.PAYMENT_REFUNDED)
    current: int | None = protocol.RESERVE  # the protocol step under way
    try:
        await told.say(protocol.reserve_inventory(saga_id, message.items))
        placed = await steps.place_order(checkout_key, saga_input.request)
        order = told.order = placed.order
        saga.use_dead_letters(ParkedCompensations(order.order_id, checkout_key))
        if placed.short:
            short = _short(saga_input, placed.short)
            await told.say(protocol.reserve_inventory_failed(saga_id, short))
            raise SagaAborted("Insufficient inventory: " + ", ".join(s["sku"] for s in short))
        told.held = protocol.reservations(order.order_id, message.items)
        told.done.add(protocol.RESERVE)
        current = protocol.CHARGE
        await told.say(
            protocol.reserve_inventory_ok(saga_id, told.held),
            protocol.charge_payment(saga_id, message.user_id, order.total_cents),
        )

        charge = await charge_directly(order, message.user_id)
        if not charge.captured:
            await told.say(
                protocol.charge_payment_failed(saga_id, charge.error, charge.decline_code)
            )
            raise SagaAborted(f"Payment declined: {charge.decline_code}")
        told.done.add(protocol.CHARGE)
        current = protocol.SHIP
        await told.say(
            protocol.charge_payment_ok(saga_id, order.payment_id, charge.transaction_id),
            protocol.create_shipment(saga_id, message.items, message.shipping_address),
        )

        _register(saga, told, checkout_key, through=OrderEvent.SHIPMENT_CANCELLED)
        shipment = await steps.ship_order(order)
        if shipment.tracking_number is None:
            refusal = shipment.refusal or "the carrier refused"
            await told.say(protocol.step_failed(saga_id, protocol.SHIP, "shipment_failed", refusal))
            raise SagaAborted(f"Shipment failed: {refusal}")
        told.done.add(protocol.SHIP)
        current = None  # every protocol step is done: what is left is the store's
        await told.say(
            protocol.create_shipment_ok(
                saga_id, steps.shipment_key(order.order_id), shipment.tracking_number
            )
        )
        await steps.complete_dispatch(order.order_id)
        outcome = protocol.checkout_complete(saga_id, order_name(order.order_id))
        await told.say(told.final(outcome))
        return outcome
    except SagaAborted as aborted:
        reason = aborted.reason
    except UnknownProduct:  # checked before the start; a product may vanish since
        await told.say(
            protocol.step_failed(saga_id, protocol.RESERVE, "unknown_sku", "a SKU left the catalog")
        )
        reason = "Unknown SKU"
    except (error.DBOSUnexpectedStepError, error.DBOSStepNondeterminismError):
        raise  # the code no longer matches the history: leave it to an operator
    except Exception as failure:  # a bug, or an outage past every retry: still compensate
        DBOS.logger.exception("node saga %s failed unexpectedly: %r", saga_id, failure)
        if current is None:
            reason = "Internal error completing the order"
        else:
            what = type(failure).__name__
            await told.say(protocol.step_failed(saga_id, current, "internal_error", what))
            reason = f"Internal error in {protocol.STEP_NAMES[current]}"

    await saga.rollback(reason)
    outcome = protocol.checkout_failed(saga_id, reason)
    await told.say(told.final(outcome))
    return outcome


def _short(saga_input: NodeSaga, short: tuple[ShortItem, ...]) -> list[dict[str, Any]]:
    return [
        {"sku": saga_input.sku_of(s.product_id), "requested": s.requested, "available": s.available}
        for s in short
    ]


async def seed_catalog() -> int:
    """Add the node's SKUs to the catalog where missing; how many were added."""
    async with write() as db:
        return await queries.add_missing_products(db, NODE_CATALOG)
