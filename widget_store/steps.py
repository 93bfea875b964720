"""The checkout's steps and compensations: each one a durable DBOS step, each idempotent.

Every step here runs its own short transaction (or calls the outside world by a key the
outside honours), and its docstring says why a second run changes nothing: DBOS runs a
step again when the process died after the step's work but before its checkpoint. Each
step logs what it did to the order's event log in the same transaction as the change.

The saga that strings them together, and the order in which their compensations are
registered, is `checkout.py`. Checkpoint names are `checkpoints.Checkpoint`.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store import metrics, order_watch, queries
from widget_store.checkpoints import Checkpoint
from widget_store.domain import (
    CancelReason,
    CheckoutRequest,
    CreatedOrder,
    OrderEvent,
    OrderSnapshot,
    OrderStatus,
    PaymentState,
    PaymentVerdict,
    PlacedOrder,
    Reservation,
    ShippingOutcome,
    ShippingRejected,
    Undone,
    UndoResult,
    describe_shortages,
    order_total,
    price_lines,
)
from widget_store.durability import services, step, write, write_alone
from widget_store.metrics import CompensationResult, Outcome
from widget_store.payments import PaymentGivenBack, PaymentProviderUnavailable, PaymentRequest
from widget_store.payments import ProviderState as Provider
from widget_store.shipping import Cancellation

SHIP_ATTEMPTS = 5
SHIP_FIRST_DELAY_S = 0.2


def order_url(order_id: int, access_token: str) -> str:
    """The order page's address, with the token that lets its owner read it."""
    return f"/order.html?order_id={order_id}&token={access_token}"


def shipment_key(order_id: int) -> str:
    return f"order-{order_id}"


def _provider_hiccup(error: BaseException) -> bool:
    return isinstance(error, PaymentProviderUnavailable)


async def _order(db: AsyncConnection, checkout_key: str) -> Any:
    return await queries.order_by_key(db, checkout_key)


class _Placed(NamedTuple):
    """What place_order needs of the order row, when it has just written all of it."""

    payment_id: str
    total_cents: int
    shipping_address: str
    access_token: str
    payment_url: str | None
    payment_deadline: datetime | None


# --- forward steps --------------------------------------------------------------------


@step(
    Checkpoint.PLACE_ORDER,
    retries_allowed=True,
    max_attempts=6,
    interval_seconds=0.5,
    should_retry=_provider_hiccup,
)
async def place_order(checkout_key: str, request: CheckoutRequest) -> PlacedOrder:
    """Create the order, hold its stock and open its payment, then register the payment.

    The first three touch only the store's tables, so they share one transaction: the
    order is inserted holding its stock and waiting for its payment, and the stock is
    taken before it commits. The provider is called after it commits, so a payment
    exists at the provider only for an order whose payment the store has opened. Out of
    stock, the order stays PENDING, SHORT with no payment, for the saga to cancel.

    A second run changes nothing: the order is an insert keyed by the checkout key, and
    the stock, the payment and the log are written in the transaction that inserts it,
    so a second run finds all of it (the first run's payment ID, token and deadline)
    and writes none of it again; the provider opens one payment per payment ID; the
    page's address is recorded once.
    """
    svc = services()
    async with write() as db:
        prices = await queries.prices_of(db, [item.product_id for item in request.items])
        lines = price_lines(request.items, prices)  # an unknown product raises here
        total = order_total(lines)
        payment_id, access_token = f"pay_{secrets.token_hex(12)}", secrets.token_urlsafe(24)
        deadline = datetime.now(UTC) + timedelta(seconds=svc.payment_timeout_s)
        order_id, created = await queries.insert_order(
            db,
            checkout_key=checkout_key,
            fingerprint=request.fingerprint(),
            lines=lines,
            total_cents=total,
            shipping_address=request.shipping_address,
            payment_id=payment_id,
            access_token=access_token,
            payment_deadline=deadline,
        )
        if created:  # all of it written just now: nothing to read back
            short = await queries.hold_stock(db, order_id, request.items)
            log = [(OrderEvent.ORDER_CREATED, f"total {total} cents")]
            if short:
                log.append((OrderEvent.RESERVE_FAILED, describe_shortages(short)))
            else:
                log.append((OrderEvent.RESERVED, ""))
                log.append((OrderEvent.PAYMENT_OPENED, f"waiting until {deadline.isoformat()}"))
            await queries.append_events(db, order_id, log)  # in this order, once each
            placed = None if short else deadline
            row = _Placed(payment_id, total, request.shipping_address, access_token, None, placed)
        else:  # a second run: the first run's transaction wrote all of it, log included
            row = await _order(db, checkout_key)
            short = queries.short_items_of(row)
    order = CreatedOrder(order_id, row.payment_id, row.total_cents, row.shipping_address)
    if short:
        order_watch.announce(order_id, checkout_key)
        return PlacedOrder(order, tuple(short), None)
    assert row.payment_deadline is not None  # opened by this run or the first
    expires_at = row.payment_deadline.timestamp()
    if row.payment_url is None:
        payment_url = await svc.payments.create_payment(
            PaymentRequest(
                payment_id=row.payment_id,
                order_id=order_id,
                amount_cents=row.total_cents,
                description=f"Widget Store order #{order_id}",
                expires_at_epoch=expires_at,
                return_url=order_url(order_id, row.access_token),
            )
        )
        async with write_alone() as db:
            fresh = await queries.set_payment_url(db, order_id, payment_url)
        if created and fresh:  # all of it this run's: the checkout call needs no read
            note = OrderSnapshot(
                order_id=order_id,
                fingerprint=request.fingerprint(),
                status=OrderStatus.PENDING.value,
                payment_id=row.payment_id,
                payment_url=payment_url,
                access_token=row.access_token,
                payment_verdict=PaymentVerdict.AWAITING.value,
                reservation=Reservation.HELD.value,
            )
            order_watch.announce(order_id, checkout_key, note=note)
            return PlacedOrder(order, (), expires_at)
    order_watch.announce(order_id, checkout_key)
    return PlacedOrder(order, (), expires_at)


@step(Checkpoint.EXPIRE_PAYMENT)
async def expire_payment(order_id: int) -> PaymentVerdict:
    """The deadline passed with no word from the provider: the payment timed out.

    Unless a verdict won the race at the deadline: the webhook and this step both try
    to decide the payment with one conditional UPDATE, and whichever commits first
    wins; this returns the verdict that stands. A second run changes nothing: the
    verdict is decided once, and the log entry is once-only.
    """
    async with write() as db:
        verdict = await queries.close_verdict(db, order_id)
        if verdict is PaymentVerdict.TIMED_OUT:
            reason = CancelReason.PAYMENT_TIMED_OUT.value
            if await queries.append_event(db, order_id, OrderEvent.CHARGE_FAILED, reason):
                order = await queries.order_by_id(db, order_id)
                metrics.payment_waited((datetime.now(UTC) - order.created_at).total_seconds())
    order_watch.announce(order_id)
    return verdict


@step(Checkpoint.SHIP_ORDER)
async def ship_order(order: CreatedOrder) -> ShippingOutcome:
    """Book the shipment, then mark the order PAID and start its dispatch.

    The carrier is asked up to five times, with backoff, for anything but a permanent
    refusal; a call that timed out may have booked anyway, which is why the saga
    registers CancelShipment, keyed by the same shipment key, before this step. A
    refusal (or a carrier down through every attempt) is logged, not raised: the saga
    then compensates. A second run changes nothing: the carrier books once per key,
    PENDING -> PAID happens once (and the dispatch deadline of the first run stands),
    and each log entry is once-only.
    """
    svc = services()
    key = shipment_key(order.order_id)
    tracking: str | None = None
    refusal = ""
    delay = SHIP_FIRST_DELAY_S
    attempts = 0
    while tracking is None:
        attempts += 1
        try:
            tracking = await svc.shipping.create_shipment(key, order.shipping_address)
        except ShippingRejected as error:
            refusal = str(error)
            break
        except Exception as error:  # a carrier hiccup, a timeout, a database blip
            if attempts >= SHIP_ATTEMPTS:
                refusal = f"the carrier failed {attempts} times: {error}"
                break
            await asyncio.sleep(delay)
            delay *= 2
    async with write_alone() as db:  # each statement below stands alone
        if tracking is None:
            detail = refusal[:500]
            await queries.append_event(db, order.order_id, OrderEvent.SHIPMENT_FAILED, detail)
            outcome = ShippingOutcome(attempts, refusal=refusal)
        else:
            eta = datetime.now(UTC) + timedelta(seconds=svc.dispatch_s)
            tries = "" if attempts == 1 else f" (after {attempts} attempts)"
            marked = await queries.advance_and_log(
                db,
                order.order_id,
                old=OrderStatus.PENDING,
                new=OrderStatus.PAID,
                log=[
                    (OrderEvent.SHIPMENT_CREATED, f"{tracking}{tries}"),
                    (OrderEvent.DISPATCH_STARTED, f"{svc.dispatch_s:g}s"),
                ],
                tracking_number=tracking,
                dispatch_eta=eta,
            )
            if not marked:  # a second run: the first run's tracking and deadline stand
                row = await queries.order_by_id(db, order.order_id)
                tracking, eta = row.tracking_number, row.dispatch_eta
            outcome = ShippingOutcome(
                attempts,
                tracking_number=tracking,
                dispatch_s=svc.dispatch_s,
                dispatch_until=eta.timestamp(),
            )
    order_watch.announce(order.order_id)
    return outcome


@step(Checkpoint.COMPLETE_DISPATCH)
async def complete_dispatch(order_id: int) -> None:
    """PAID -> DISPATCHED: the checkout is complete. Once: a conditional UPDATE."""
    async with write_alone() as db:
        dispatched = await queries.advance_and_log(
            db,
            order_id,
            old=OrderStatus.PAID,
            new=OrderStatus.DISPATCHED,
            log=[(OrderEvent.DISPATCHED, ""), (OrderEvent.COMPLETE, "")],
        )
    if dispatched:
        metrics.checkout_ended(Outcome.DISPATCHED)
    order_watch.announce(order_id)


# --- compensations, named for what they undo ------------------------------------------
# Each is defined for every state the thing it undoes can be in: "nothing to undo" is
# success, and the log says which case it was. A failure (the provider down) is raised,
# and the saga retries the compensation with backoff, then parks it for an operator.


@step(Checkpoint.CANCEL_ORDER, compensation=OrderEvent.ORDER_CANCELLED)
async def cancel_order(checkout_key: str, reason: str) -> Undone:
    """Undo create_order: the order ends CANCELLED with the reason.

    Always the last compensation to run, so it also logs the outcome, in the same
    transaction: nobody sees a CANCELLED order whose history is unfinished. Once: the
    UPDATE only matches an order that has not ended, and the log entries are once-only.
    """
    async with write() as db:
        order_id = await queries.cancel_order(db, checkout_key, reason)
        if order_id is not None:
            await queries.append_event(db, order_id, OrderEvent.ORDER_CANCELLED, reason)
            await queries.append_event(db, order_id, OrderEvent.FAILED, reason)
    if order_id is None:
        return Undone(UndoResult.NOTHING_TO_UNDO, "no open order to cancel")
    metrics.checkout_ended(Outcome.CANCELLED, reason)
    order_watch.announce(order_id, checkout_key)
    return Undone(UndoResult.DONE, reason)


@step(Checkpoint.RELEASE_INVENTORY, compensation=OrderEvent.RESERVATION_RELEASED)
async def release_inventory(checkout_key: str) -> Undone:
    """Undo reserve_inventory: held stock goes back on the shelf.

    Nothing held (refused for want of stock, never reserved, released already) is
    nothing to undo. Once: held -> released is a conditional UPDATE, and the log entry
    is once-only.
    """
    async with write() as db:
        order = await _order(db, checkout_key)
        if order is None:
            return Undone(UndoResult.NOTHING_TO_UNDO, "no order was created")
        released = await queries.release_stock(db, order.order_id)
        if released:
            lines = ", ".join(f"{line.quantity} x product {line.product_id}" for line in released)
            undone = Undone(UndoResult.DONE, f"{lines} back on the shelf")
        elif order.reservation == Reservation.RELEASED:
            undone = Undone(UndoResult.NOTHING_TO_UNDO, "already back on the shelf")
        else:
            undone = Undone(UndoResult.NOTHING_TO_UNDO, "nothing was held")
        await queries.append_event(
            db, order.order_id, OrderEvent.RESERVATION_RELEASED, undone.detail
        )
    order_watch.announce(order.order_id)
    return undone


GIVEN_BACK = {
    (Provider.CAPTURED, Provider.REFUNDED): (PaymentState.REFUNDED, "refunded {amount} cents"),
    (Provider.OPEN, Provider.VOIDED): (PaymentState.VOIDED, "nothing was captured: payment voided"),
    (Provider.REFUNDED, Provider.REFUNDED): (PaymentState.REFUNDED, "already refunded"),
    (Provider.VOIDED, Provider.VOIDED): (
        PaymentState.VOIDED,
        "nothing was captured: already voided",
    ),
    (Provider.DECLINED, Provider.DECLINED): (
        PaymentState.UNTOUCHED,
        "nothing was captured: the payment was declined",
    ),
    (Provider.EXPIRED, Provider.EXPIRED): (
        PaymentState.UNTOUCHED,
        "nothing was captured: the payment expired",
    ),
    (Provider.UNKNOWN, Provider.UNKNOWN): (
        PaymentState.UNTOUCHED,
        "the provider has no such payment: nothing moved",
    ),
}


def describe_given_back(given: PaymentGivenBack, amount_cents: int) -> tuple[PaymentState, Undone]:
    """What the store records of the provider's answer, and how the history says it."""
    state, words = GIVEN_BACK.get(
        (given.before, given.after),
        (PaymentState.UNTOUCHED, f"the provider left it {given.after.value}"),
    )
    moved = given.before is not given.after
    detail = words.format(amount=amount_cents)
    if given.reference:
        detail += f" ({given.reference})"
    return state, Undone(UndoResult.DONE if moved else UndoResult.NOTHING_TO_UNDO, detail)


async def give_back_payment(order: Any) -> Undone:
    """Ask the provider to give the order's payment back, and record what it did.

    Shared by the current saga and version 0.1's refund step. Once: the provider acts
    once per idempotency key (and only on an open or captured payment), the money's
    state moves once, and the log entry is once-only.
    """
    given = await services().payments.give_back(order.payment_id, f"refund-{order.payment_id}")
    state, undone = describe_given_back(given, order.total_cents)
    async with write() as db:
        await queries.set_payment_state(
            db, order.order_id, old=(None, PaymentState.CAPTURED), new=state.value
        )
        await queries.append_event(db, order.order_id, OrderEvent.PAYMENT_REFUNDED, undone.detail)
    order_watch.announce(order.order_id)
    return undone


@step(Checkpoint.REFUND_PAYMENT, compensation=OrderEvent.PAYMENT_REFUNDED)
async def refund_payment(checkout_key: str) -> Undone:
    """Undo the payment, whatever state the provider has it in.

    Captured: refunded. Opened (or authorised) but never captured: voided, so that it
    can never be captured later. Refunded, voided, declined or expired already: done.
    Unknown to the provider: nothing moved, done. The provider failing: raised, and
    retried by the saga. An order whose payment the store never opened (refused for
    want of stock) has nothing at the provider, and logs nothing.

    A payment still waiting for its verdict (the saga failed before one came, or the
    watchdog is undoing a stalled checkout) is first closed to verdicts, as its deadline
    would close it: a webhook arriving after the money was given back is refused (409)
    instead of capturing money for a cancelled order. Once: a conditional UPDATE.
    """
    async with write() as db:
        order = await _order(db, checkout_key)
        if order is not None and order.payment_verdict == PaymentVerdict.AWAITING.value:
            await queries.close_verdict(db, order.order_id)
    if order is None or order.payment_verdict is None:
        return Undone(UndoResult.NOTHING_TO_UNDO, "no payment was opened")
    return await give_back_payment(order)


@step(Checkpoint.CANCEL_SHIPMENT, compensation=OrderEvent.SHIPMENT_CANCELLED)
async def cancel_shipment(checkout_key: str) -> Undone:
    """Undo create_shipment: cancel it at the carrier, whatever it knows of it.

    Booked: cancelled. Never booked (refused, or the carrier never answered), or
    cancelled already: nothing to undo. The carrier cancels once per key, and the log
    entry is once-only.
    """
    async with services().engine.connect() as db:
        order = await _order(db, checkout_key)
    if order is None:
        return Undone(UndoResult.NOTHING_TO_UNDO, "no order was created")
    key = shipment_key(order.order_id)
    answer = await services().shipping.cancel_shipment(key)
    undone = {
        Cancellation.CANCELLED: Undone(UndoResult.DONE, f"cancelled shipment {key}"),
        Cancellation.ALREADY_CANCELLED: Undone(UndoResult.NOTHING_TO_UNDO, "already cancelled"),
        Cancellation.NEVER_BOOKED: Undone(
            UndoResult.NOTHING_TO_UNDO, "never booked: nothing to cancel"
        ),
    }[answer]
    async with write() as db:
        await queries.append_event(db, order.order_id, OrderEvent.SHIPMENT_CANCELLED, undone.detail)
    order_watch.announce(order.order_id)
    return undone


# --- parked compensations --------------------------------------------------------------


@step(Checkpoint.PARK_COMPENSATION)
async def park_compensation(
    order_id: int, workflow_id: str, compensation: str, error: str, attempts: int
) -> None:
    """Record a compensation that keeps failing as a dead letter, and say so in the log.

    Once: the dead letter is keyed by (order, compensation) and updated in place; the
    log entry carries the attempt count, so parking again later logs again.
    """
    async with write() as db:
        await queries.park_dead_letter(
            db,
            order_id=order_id,
            workflow_id=workflow_id,
            compensation=compensation,
            error=error,
            attempts=attempts,
        )
        detail = f"{compensation} after {attempts} failed attempts: {error}"[:500]
        await queries.append_event(db, order_id, OrderEvent.COMPENSATION_PARKED, detail)
    metrics.compensation_ran(compensation, CompensationResult.PARKED)
    order_watch.announce(order_id)


@step(Checkpoint.RETRY_COMPENSATION)
async def retry_compensation(order_id: int, compensation: str) -> None:
    """The parked compensation is about to be tried again (its status set, not counted)."""
    async with write() as db:
        await queries.set_dead_letter_status(db, order_id, compensation, "retrying")
        await queries.append_event(db, order_id, OrderEvent.COMPENSATION_RETRIED, compensation)
    order_watch.announce(order_id)


@step(Checkpoint.RESOLVE_COMPENSATION)
async def resolve_compensation(order_id: int, compensation: str) -> None:
    """The parked compensation finally succeeded (a status set: the same twice)."""
    async with write() as db:
        await queries.set_dead_letter_status(db, order_id, compensation, "resolved")


# --- what the watchdog reads ------------------------------------------------------------


@step(Checkpoint.READ_ORDER_STATUS)
async def read_order_status(order_id: int) -> str:
    """The order's status, checkpointed so a replay takes the same branch (a read)."""
    async with services().engine.connect() as db:
        row = await queries.order_by_id(db, order_id)
    return str(row.status) if row else OrderStatus.CANCELLED.value
