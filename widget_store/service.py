"""What the HTTP routes call: start or find a checkout, accept a verdict, retry, watchdog.

The routes parse and authorise; these functions talk to the saga (`checkout.py`) and
read the order row, which is the one truth a checkout's answer is made from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS, PropagateOtelContext, SetWorkflowID, error

from widget_store import metrics, order_watch, queries, tracing
from widget_store.checkout import checkout_workflow
from widget_store.checkpoints import Topic
from widget_store.domain import (
    CheckoutRejected,
    CheckoutRequest,
    CheckoutStillStarting,
    DeadLetterNotFound,
    DeadLetterNotParked,
    IdempotencyConflict,
    OrderEvent,
    OrderSnapshot,
    OrderStatus,
    OutOfStock,
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    PaymentVerdict,
    Reservation,
    TripFailed,
    TripRequest,
    TripStatus,
    TripStillRunning,
    WebhookMismatch,
    reason_for,
)
from widget_store.durability import ACTIVE, reading, running_here, services, started_here
from widget_store.logs import log_context
from widget_store.queries import trips as trip_queries
from widget_store.steps import order_url
from widget_store.travel import TRIP_LEGS
from widget_store.trip import book_trip_workflow
from widget_store.trip_steps import CANCELLED
from widget_store.watchdog import WatchdogReport, watchdog_workflow

CHECKOUT_REPLY_TIMEOUT_S = 30.0
# How often a checkout request looks at the database while it waits for its order:
# announcements wake it at once when this process runs the workflow; this covers a
# workflow recovered by another process.
CHECKOUT_RECHECK_S = 0.25


@dataclass(frozen=True)
class CheckoutView:
    """A checkout's answer to its owner: the order, where to pay, how to follow it."""

    order_id: int
    payment_id: str
    payment_url: str | None
    status: str
    order_token: str
    order_url: str


def _placed(order: Any) -> bool:
    """The order has got as far as its answer: the payment page, or its end (a refusal
    for want of stock is answered once the saga has cancelled the order)."""
    if OrderStatus(order.status).is_terminal:
        return True
    return order.payment_url is not None and order.reservation != Reservation.SHORT


async def start_checkout(checkout_key: str, request: CheckoutRequest) -> CheckoutView:
    """Start (or find) the checkout for this key; answer once stock is held or refused."""
    with services().progress.working():
        return await _start_checkout(checkout_key, request)


def checkout_admitted() -> AbstractAsyncContextManager[None]:
    """A place among the checkouts this process starts at once; StoreBusy if none frees
    up shortly (see admission.py). The route takes it before any other work."""
    return services().admission.starting()


async def _start_checkout(checkout_key: str, request: CheckoutRequest) -> CheckoutView:
    engine = services().engine
    deadline = time.monotonic() + CHECKOUT_REPLY_TIMEOUT_S
    with order_watch.watching(checkout_key) as news:  # subscribe first: no news slips by
        # PropagateOtelContext stores the trace with the workflow: recovered elsewhere
        # after a crash, it rejoins the checkout's trace (a no-op with tracing off). The
        # task copies this context (workflow ID, trace, log labels) when it is created.
        with (
            SetWorkflowID(checkout_key),
            PropagateOtelContext(),
            log_context(checkout_key=checkout_key),
        ):
            # DBOS waits out a database that refuses connections rather than fail; the
            # shopper gets an answer in time anyway, and the start (shielded, so never
            # half done) carries on, for the retry under the same key to find.
            starting = asyncio.ensure_future(DBOS.start_workflow_async(checkout_workflow, request))
        # A workflow this call just started has placed nothing yet: wait for its news
        # before reading (the subscription above catches news however early it comes).
        news_first = False
        try:
            handle = await asyncio.wait_for(asyncio.shield(starting), CHECKOUT_REPLY_TIMEOUT_S)
            if started_here(handle):  # a retry of the key finds it: counted once
                metrics.checkout_started()
                news_first = True
        except error.DBOSConflictingWorkflowError:
            pass  # an earlier version's checkout under this key: its order answers
        except TimeoutError:
            raise CheckoutStillStarting(
                "the checkout is still starting; retry with the same idempotency key"
            ) from None
        while True:
            if news_first:
                news_first = False
                # Its own step announces what it committed, or the saga its refusal: read
                # nothing before that, however loaded the process (it once read after
                # the 0.25 s recheck whenever place_order took longer).
                await _news_or_end(news, running_here(handle), deadline - time.monotonic())
            # News from this process's own step says what it committed: no read then.
            order = news.take_note()
            if not isinstance(order, OrderSnapshot):
                async with reading(engine).connect() as conn:
                    order = await queries.order_by_key(conn, checkout_key)
            if order is not None and _placed(order):
                break
            if order is None and await _ended(checkout_key):
                raise CheckoutRejected("the checkout was refused before an order was created")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckoutStillStarting(
                    "the checkout is still starting; retry with the same idempotency key"
                )
            await news.next(min(remaining, CHECKOUT_RECHECK_S))
    return _answer(order, request)


async def _ended(checkout_key: str) -> bool:
    status = await DBOS.get_workflow_status_async(checkout_key)
    return status is None or status.status not in ACTIVE


def _answer(order: Any, request: CheckoutRequest) -> CheckoutView:
    if order.fingerprint != request.fingerprint():
        raise IdempotencyConflict(
            "this idempotency key was used for a different checkout request",
            order_id=order.order_id,
        )
    short = queries.short_items_of(order)
    if short:
        raise OutOfStock(order.order_id, short)
    if order.status == OrderStatus.CANCELLED and order.payment_verdict is None:
        raise CheckoutRejected(
            f"the checkout was refused: {order.cancel_reason}", order_id=order.order_id
        )
    return CheckoutView(
        order_id=order.order_id,
        payment_id=order.payment_id,
        # Only an order still waiting for its payment offers the page to pay on.
        payment_url=order.payment_url if order.status == OrderStatus.PENDING else None,
        status=order.status,
        order_token=order.access_token or "",
        order_url=order_url(order.order_id, order.access_token or ""),
    )


async def accept_payment_verdict(
    payment_id: str, verdict: PaymentVerdict, event_id: str, amount_cents: int
) -> dict[str, Any]:
    """Apply the provider's webhook: decide the payment once, then wake the workflow.

    The verdict (and, if paid, the capture) is written to the order row by a conditional
    UPDATE before the message is sent, so a crash in between loses nothing: the
    workflow finds the verdict in the row at its deadline at the latest, and the
    provider's retry of the same event re-sends the message under the same key.
    """
    with services().progress.working():
        return await _accept_payment_verdict(payment_id, verdict, event_id, amount_cents)


async def _accept_payment_verdict(
    payment_id: str, verdict: PaymentVerdict, event_id: str, amount_cents: int
) -> dict[str, Any]:
    now = datetime.now(UTC)
    repeated = False
    event = OrderEvent.CHARGED if verdict is PaymentVerdict.PAID else OrderEvent.CHARGE_FAILED
    detail = "" if verdict is PaymentVerdict.PAID else reason_for(verdict).value
    async with services().writer.begin() as conn:
        # The usual delivery (new, in time, the right amount), decided and logged in one
        # statement on PostgreSQL; anything else is worked out below, in the same
        # transaction.
        order = await queries.claim_first_verdict(
            conn, payment_id, verdict, event_id, amount_cents, now, log=(event, detail)
        )
        claimed = order is not None
        if order is None:
            order = await queries.order_by_payment(conn, payment_id)
            if order is None:
                raise PaymentNotFound(f"unknown payment {payment_id}")
            if await queries.remember_webhook_event(conn, event_id, payment_id, now) != payment_id:
                raise WebhookMismatch("this event ID was already used for another payment")
            if amount_cents != order.total_cents:
                raise PaymentAmountMismatch(
                    f"amount {amount_cents} does not match the order total {order.total_cents}"
                )
            claimed = await queries.claim_verdict(conn, payment_id, verdict, event_id, now)
            if claimed:
                await queries.append_event(conn, order.order_id, event, detail)
        if claimed:
            metrics.payment_waited((now - order.created_at).total_seconds())
        else:
            current = await queries.order_by_payment(conn, payment_id)
            repeated = (
                current.payment_event_id == event_id and current.payment_verdict == verdict.value
            )
            if not repeated:
                raise PaymentClosed(_closed_message(current), order=queries.order_state(current))
    order_watch.announce(order.order_id)
    await tracing.link_to_workflow(order.checkout_key)
    await DBOS.send_async(
        order.checkout_key, verdict.value, Topic.PAYMENT, idempotency_key=event_id
    )
    # `duplicate` is for the route's metrics; the reply is the same either way.
    return {"order_id": order.order_id, "status": verdict.value, "duplicate": repeated}


def _closed_message(order: Any) -> str:
    if order.payment_verdict in (None, ""):
        return "this order is not waiting for a payment"
    if order.payment_verdict != PaymentVerdict.AWAITING.value:
        return f"the payment was already decided: {order.payment_verdict}"
    return "the payment deadline has passed"


async def retry_dead_letter(dead_letter_id: int) -> dict[str, Any]:
    """An operator asks for a parked compensation to be tried again now."""
    async with services().engine.connect() as conn:
        row = await queries.dead_letter(conn, dead_letter_id)
    if row is None:
        raise DeadLetterNotFound(f"unknown dead letter {dead_letter_id}")
    if row.status != "parked":
        raise DeadLetterNotParked(f"dead letter {dead_letter_id} is {row.status}, not parked")
    await DBOS.send_async(
        row.workflow_id,
        "retry",
        Topic.COMPENSATION_RETRY,
        idempotency_key=f"retry-{dead_letter_id}-{row.attempts}",
    )
    return {"dead_letter_id": dead_letter_id, "status": "retry requested"}


async def run_watchdog() -> WatchdogReport:
    """A watchdog pass now, for the operations API."""
    handle = await DBOS.start_workflow_async(watchdog_workflow, datetime.now(UTC), None)
    report: WatchdogReport = await handle.get_result()
    return report


# --- trips ---------------------------------------------------------------------------------

TRIP_REPLY_TIMEOUT_S = 30.0
UNDO_NAMES = {event.value: f"cancel_{leg}" for leg, event in CANCELLED.items()}


@dataclass(frozen=True)
class TripView:
    """A finished trip, as its owner is told: what each service confirmed, what was undone."""

    trip_id: int
    status: str
    bookings: dict[str, str]
    cancelled: list[str]  # the undos that ran, in the order they ran (newest leg first)
    reason: str | None
    trip_token: str
    trip_url: str


def trip_url(trip_id: int, access_token: str) -> str:
    """Where the trip and its history are read, with the token that lets its owner read it."""
    return f"/trips/{trip_id}?token={access_token}"


def trip_view(trip: Mapping[str, Any], event_types: Sequence[str]) -> TripView:
    """The trip row and the types of its log entries (oldest first), as the reply shapes
    them."""
    bookings: dict[str, str] = {
        leg: confirmation for leg in TRIP_LEGS if (confirmation := trip[f"{leg}_confirmation"])
    }
    cancelled = [UNDO_NAMES[type_] for type_ in event_types if type_ in UNDO_NAMES]
    return TripView(
        trip_id=trip["trip_id"],
        status=trip["status"],
        bookings=bookings,
        cancelled=cancelled,
        reason=trip["reason"],
        trip_token=trip["access_token"],
        trip_url=trip_url(trip["trip_id"], trip["access_token"]),
    )


async def book_trip(trip_key: str, request: TripRequest) -> TripView:
    """Start (or find) the trip for this key; answer once it is booked or rolled back."""
    with services().progress.working():
        return await _book_trip(trip_key, request)


async def _book_trip(trip_key: str, request: TripRequest) -> TripView:
    engine = services().engine
    deadline = time.monotonic() + TRIP_REPLY_TIMEOUT_S
    still_running = TripStillRunning("the trip is still running; retry with the same key")
    with order_watch.watching(trip_key) as news:  # subscribe first: no news slips by
        with SetWorkflowID(trip_key), PropagateOtelContext(), log_context(checkout_key=trip_key):
            starting = asyncio.ensure_future(DBOS.start_workflow_async(book_trip_workflow, request))
        try:
            handle = await asyncio.wait_for(asyncio.shield(starting), TRIP_REPLY_TIMEOUT_S)
        except error.DBOSConflictingWorkflowError:
            raise IdempotencyConflict("this idempotency key was used for another request") from None
        except TimeoutError:
            raise still_running from None
        # A trip started here is watched for free: its steps announce each commit, and its
        # task says when it stops. One started elsewhere (the key asked again after a
        # crash, the workflow recovered) announces here too if this process recovered it;
        # the database is asked as often as for a long-polled order otherwise.
        task = running_here(handle)
        recheck_s = order_watch.recheck_s(len(services().executors), fed=False)
        stopped = False  # the workflow is not running (here, or anywhere)
        if task is not None and not task.done():  # nothing to read before its end, or news
            await _news_or_end(news, task, deadline - time.monotonic())
        while True:
            async with reading(engine).connect() as conn:
                found = await trip_queries.trip_and_event_types_by_key(conn, trip_key)
            if found is not None:
                trip, event_types = found
                if trip.fingerprint != request.fingerprint():
                    raise IdempotencyConflict(
                        "this idempotency key was used for a different trip", trip_id=trip.trip_id
                    )
                if TripStatus(trip.status).is_terminal:
                    return trip_view(trip._mapping, event_types)
            if stopped:  # and the row, read after it stopped, is still unfinished
                raise await _why_unfinished(trip_key, still_running)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise still_running
            if task is None:
                if not await news.next(min(remaining, recheck_s)):
                    stopped = not await _trip_running(trip_key)
            elif task.done():
                stopped = True
            else:
                await _news_or_end(news, task, remaining)


async def _news_or_end(
    news: order_watch.News, task: asyncio.Future[Any] | None, timeout: float
) -> None:
    """Wait for the next announcement, or for the workflow's task to stop, or time (a
    workflow running elsewhere, `task` None: the next announcement or a recheck's time)."""
    if task is None:
        await news.next(max(0.0, min(timeout, CHECKOUT_RECHECK_S)))
        return
    waiting = asyncio.ensure_future(news.next(timeout))
    try:
        await asyncio.wait([waiting, task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


async def _trip_running(trip_key: str) -> bool:
    status = await DBOS.get_workflow_status_async(trip_key)
    return status is not None and status.status in ACTIVE


async def _why_unfinished(trip_key: str, still_running: TripStillRunning) -> Exception:
    """A trip whose workflow stopped without ending it: for good (it ended some other
    way), or for now (cut short here; recovery resumes it, and the key asks again)."""
    status = await DBOS.get_workflow_status_async(trip_key)
    if status is None or status.status not in ACTIVE:
        state = status.status if status else "missing"
        return TripFailed(f"the trip's workflow ended without booking or rolling back ({state})")
    return still_running
