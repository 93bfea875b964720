"""The saga's writes to an order, its stock and its event log.

Each write a saga step or compensation makes is a conditional UPDATE on a state column
or an insert keyed by something unique, so running it twice changes nothing the second
time. That is what lets a step that committed, then crashed before DBOS checkpointed
it, simply run again; the WHERE clause of each says how.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store.domain import (
    LineItem,
    OrderEvent,
    OrderStatus,
    PaymentState,
    PaymentVerdict,
    PricedLine,
    Reservation,
    ShortItem,
    shortages,
)
from widget_store.events import Aggregate, check_payload, subject_of
from widget_store.queries._base import TERMINAL, Db, changed_one_row, utcnow
from widget_store.queries.outbox import (
    add_event,
    is_postgres,
    log_and_publish,
    log_and_publish_many,
    log_many_ctes,
    log_many_parameters,
)
from widget_store.schema import (
    UTCDateTime,
    order_events,
    order_items,
    orders,
    products,
    webhook_events,
)

# Log entries that may legitimately repeat in one order's history.
REPEATABLE_EVENTS = frozenset({OrderEvent.COMPENSATION_PARKED, OrderEvent.COMPENSATION_RETRIED})


def _once_key(event: OrderEvent) -> str | None:
    """What makes a log entry once-only: its type, unless it may repeat (then none)."""
    return None if event in REPEATABLE_EVENTS else event.value


def _keyed(entries: Sequence[tuple[OrderEvent, str]]) -> list[tuple[str, str, str | None]]:
    return [(event.value, detail, _once_key(event)) for event, detail in entries]


def _dialect_of(db: Db) -> str:
    bind = db if isinstance(db, AsyncConnection) else db.bind
    return bind.dialect.name if bind is not None else "sqlite"


def _insert_ignoring_duplicates(db: Db, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect of the connection."""
    return _ignoring_duplicates(_dialect_of(db), table)


@functools.cache
def _ignoring_duplicates(dialect: str, table: sa.Table) -> Any:
    return (
        (postgresql if dialect == "postgresql" else sqlite).insert(table).on_conflict_do_nothing()
    )


# The statements of every purchase, built once and run with their values bound: building
# a statement anew costs SQLAlchemy more CPU than running one built before (about 0.15 ms
# for a one-row UPDATE, 2 ms for a large upsert, on this machine).
@functools.cache
def _insert_order(dialect: str) -> Any:
    return _ignoring_duplicates(dialect, orders).returning(orders.c.order_id)


_ORDER_ID_BY_KEY = sa.select(orders.c.order_id).where(
    orders.c.checkout_key == sa.bindparam("b_key")
)
_INSERT_ORDER_ITEMS = sa.insert(order_items)
_ADJUST_STOCK = (
    sa.update(products)
    .where(
        products.c.product_id == sa.bindparam("b_product"),
        products.c.inventory + sa.bindparam("b_delta") >= 0,
    )
    .values(inventory=products.c.inventory + sa.bindparam("b_delta"))
)
_SET_PAYMENT_URL = (
    sa.update(orders)
    .where(orders.c.order_id == sa.bindparam("b_order"), orders.c.payment_url.is_(None))
    .values(payment_url=sa.bindparam("b_url"), updated_at=sa.bindparam("b_at"))
)


async def append_event(db: Db, order_id: int, event: OrderEvent, detail: str = "") -> bool:
    """Log a change to the order, in the transaction that makes it; once per order.

    The entry's type is its once-key, so a step that runs again logs nothing twice
    (and the first run's detail stands). Parking and retrying a compensation may
    happen several times and are logged each time. Each entry added also goes to the
    outbox, for the event stream. True if the entry was added.
    """
    key = _once_key(event)
    now = utcnow()
    if is_postgres(db):  # the same three writes, as one statement
        return await log_and_publish(
            db, order_id=order_id, type=event.value, detail=detail, at=now, once_key=key
        )
    # RETURNING says whether a row went in: after ON CONFLICT DO NOTHING, psycopg's
    # rowcount is -1 either way.
    result = await db.execute(
        _insert_ignoring_duplicates(db, order_events)
        .values(order_id=order_id, type=event.value, detail=detail, at=now, once_key=key)
        .returning(order_events.c.event_id)
    )
    added = result.scalar_one_or_none() is not None
    if added:
        # The same change, for the rest of the business: an event exists if and only if
        # its change committed. The detail stays home (it may name a refund or an address).
        await add_event(db, order_id=order_id, type=event.value, payload={}, at=now)
    return added


async def append_events(
    db: Db, order_id: int, entries: Sequence[tuple[OrderEvent, str]]
) -> list[OrderEvent]:
    """Log several changes to the order at once, in the transaction that makes them:
    `append_event` for each `(event, detail)`, in order, as one statement on PostgreSQL.
    Returns the events added (each is once per order, as there)."""
    if not is_postgres(db):
        return [
            event for event, detail in entries if await append_event(db, order_id, event, detail)
        ]
    added = await log_and_publish_many(
        db,
        owner_id=order_id,
        entries=_keyed(entries),
        at=utcnow(),
    )
    return [OrderEvent(type) for type in added]


async def insert_order(
    db: Db,
    *,
    checkout_key: str,
    fingerprint: str,
    lines: Sequence[PricedLine],
    total_cents: int,
    shipping_address: str,
    payment_id: str,
    access_token: str,
    payment_deadline: datetime,
) -> tuple[int, bool]:
    """A PENDING order with its lines, once per checkout key (a unique column), born
    holding its stock and waiting for its payment until `payment_deadline`.

    The caller takes the stock in the same transaction (`hold_stock`), which turns the
    order SHORT, with no payment, if it cannot: the order is seen, committed, only with
    its stock held or refused. Returns the order's ID and whether this call created it:
    a second run finds the first run's order, with the first run's payment ID, token
    and deadline.
    """
    now = utcnow()
    created = await db.execute(
        _insert_order(_dialect_of(db)),
        {
            "checkout_key": checkout_key,
            "fingerprint": fingerprint,
            "status": OrderStatus.PENDING.value,
            "total_cents": total_cents,
            "shipping_address": shipping_address,
            "payment_id": payment_id,
            "access_token": access_token,
            "reservation": Reservation.HELD.value,
            "payment_verdict": PaymentVerdict.AWAITING.value,
            "payment_deadline": payment_deadline,
            "created_at": now,
            "updated_at": now,
        },
    )
    order_id: int | None = created.scalar_one_or_none()
    if order_id is None:
        existing = await db.execute(_ORDER_ID_BY_KEY, {"b_key": checkout_key})
        return existing.scalar_one(), False
    await db.execute(
        _INSERT_ORDER_ITEMS,
        [
            {
                "order_id": order_id,
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
            }
            for line in lines
        ],
    )
    return order_id, True


async def order_lines(db: Db, order_id: int) -> list[LineItem]:
    result = await db.execute(
        sa.select(order_items.c.product_id, order_items.c.quantity)
        .where(order_items.c.order_id == order_id)
        .order_by(order_items.c.product_id)
    )
    return [LineItem(row.product_id, row.quantity) for row in result]


async def _stock_of(db: Db, product_ids: Sequence[int]) -> dict[int, int]:
    result = await db.execute(
        sa.select(products.c.product_id, products.c.inventory).where(
            products.c.product_id.in_(list(product_ids))
        )
    )
    return {row.product_id: row.inventory for row in result}


async def _adjust_stock(db: Db, product_id: int, delta: int) -> bool:
    """Add delta to a product's stock unless that would take it below zero."""
    return await changed_one_row(db, _ADJUST_STOCK, {"b_product": product_id, "b_delta": delta})


async def hold_stock(db: Db, order_id: int, lines: Sequence[LineItem]) -> list[ShortItem]:
    """Take the stock of an order `insert_order` has just created in this transaction,
    every line or none: empty if it was all taken, else the short lines, and the order
    SHORT, with no payment to wait for.

    `lines` are the order's lines, one per product in product order: the cart the
    order was created from (a validated `CheckoutRequest`'s items), passed rather than
    read back.

    Each decrement is one conditional UPDATE, atomic at READ COMMITTED, so concurrent
    checkouts never oversell. Rows are locked in product order, so two carts sharing
    products cannot deadlock. Once per order because the order is: nobody else sees it
    before this transaction commits, and a second run of the step finds it created.
    """
    taken: list[LineItem] = []
    for line in lines:
        if not await _adjust_stock(db, line.product_id, -line.quantity):
            # Give back what this transaction took; those rows are still locked by us.
            for done in taken:
                await _adjust_stock(db, done.product_id, done.quantity)
            stock = await _stock_of(db, [item.product_id for item in lines])
            # The line that failed was short, even if a release has refilled it since.
            failed = ShortItem(line.product_id, line.quantity, stock.get(line.product_id, 0))
            short = shortages(lines, stock) or [failed]
            await db.execute(
                sa.update(orders)
                .where(orders.c.order_id == order_id)
                .values(
                    reservation=Reservation.SHORT.value,
                    short_items=json.dumps([asdict(s) for s in short]),
                    payment_verdict=None,
                    payment_deadline=None,
                )
            )
            return short
        taken.append(line)
    return []


def short_items_of(order: Any) -> list[ShortItem]:
    """The short lines recorded on an order row (empty if it held its stock)."""
    raw = order.short_items
    return [ShortItem(**item) for item in json.loads(raw)] if raw else []


async def release_stock(db: Db, order_id: int) -> list[LineItem]:
    """Put the order's held stock back on the shelf, once (held -> released).

    Returns the lines given back; empty when nothing was held (never held, refused, or
    released already).
    """
    released = await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.reservation == Reservation.HELD.value)
        .values(reservation=Reservation.RELEASED.value, updated_at=utcnow()),
    )
    if not released:
        return []
    lines = await order_lines(db, order_id)
    for line in lines:
        await _adjust_stock(db, line.product_id, line.quantity)
    return lines


async def set_payment_url(db: Db, order_id: int, payment_url: str) -> bool:
    """Record the hosted page the shopper pays on (once)."""
    return await changed_one_row(
        db, _SET_PAYMENT_URL, {"b_order": order_id, "b_url": payment_url, "b_at": utcnow()}
    )


async def claim_verdict(
    db: Db, payment_id: str, verdict: PaymentVerdict, event_id: str, now: datetime
) -> bool:
    """Record the provider's verdict if the payment is still open and in time.

    This single conditional UPDATE is the arbiter between a webhook and the deadline:
    whichever commits first decides the payment, and the loser changes nothing. A paid
    verdict records the capture in the same statement.
    """
    values: dict[str, Any] = {
        "payment_verdict": verdict.value,
        "payment_event_id": event_id,
        "updated_at": now,
    }
    if verdict is PaymentVerdict.PAID:
        values["payment_state"] = PaymentState.CAPTURED.value
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(
            orders.c.payment_id == payment_id,
            orders.c.payment_verdict == PaymentVerdict.AWAITING.value,
            orders.c.payment_deadline > now,
        )
        .values(**values),
    )


async def claim_first_verdict(
    db: Db,
    payment_id: str,
    verdict: PaymentVerdict,
    event_id: str,
    amount_cents: int,
    now: datetime,
    *,
    log: tuple[OrderEvent, str],
) -> Any:
    """The usual webhook: a new event, in time, for the order's total, decided and logged.

    Notes the event (an insert keyed by its ID) and, only if it is new, decides the
    payment with claim_verdict's conditional UPDATE, narrowed to the right amount, and
    logs `log` (event, detail) with its outbox event. On PostgreSQL all of it is one
    statement; elsewhere three. Returns the order (its ID, checkout key and creation
    time) if it was decided; None if anything was unusual (a repeated or reused event,
    an unknown payment, a wrong amount, a payment already decided or past its deadline),
    with nothing but the event's note written, for the caller to work out which, in the
    same transaction, the long way.
    """
    event, detail = log
    if is_postgres(db):
        subject_of(Aggregate.ORDER, event.value)  # refuse a type that cannot be published
        result = await db.execute(
            CLAIM_AND_LOG,
            {
                "event_id": event_id,
                "payment_id": payment_id,
                "now": now,
                "verdict": verdict.value,
                "captured": verdict is PaymentVerdict.PAID,
                "captured_state": PaymentState.CAPTURED.value,
                "awaiting": PaymentVerdict.AWAITING.value,
                "amount": amount_cents,
                "type": event.value,
                "detail": detail,
                "once_key": _once_key(event),
                "aggregate": Aggregate.ORDER.value,
                "outbox_event_id": str(uuid.uuid4()),
                "payload": check_payload({}),
            },
        )
        return result.one_or_none()
    noted = await db.execute(
        _insert_ignoring_duplicates(db, webhook_events)
        .values(event_id=event_id, payment_id=payment_id, received_at=now)
        .returning(webhook_events.c.event_id)
    )
    if noted.scalar_one_or_none() is None:
        return None
    values: dict[str, Any] = {
        "payment_verdict": verdict.value,
        "payment_event_id": event_id,
        "updated_at": now,
    }
    if verdict is PaymentVerdict.PAID:
        values["payment_state"] = PaymentState.CAPTURED.value
    result = await db.execute(
        sa.update(orders)
        .where(
            orders.c.payment_id == payment_id,
            orders.c.payment_verdict == PaymentVerdict.AWAITING.value,
            orders.c.payment_deadline > now,
            orders.c.total_cents == amount_cents,
        )
        .values(**values)
        .returning(orders.c.order_id, orders.c.checkout_key, orders.c.created_at)
    )
    order = result.one_or_none()
    if order is not None:
        await append_event(db, order.order_id, event, detail)
    return order


# claim_first_verdict on PostgreSQL: the event noted, the verdict claimed only if the
# event was new, and the log entry with its outbox event (as LOG_AND_PUBLISH writes them)
# only if the verdict was claimed, in one statement. Every part that did not happen
# leaves the next with no rows: an unusual delivery writes at most the note of its new
# event, which the caller's long way then finds, in the same transaction.
CLAIM_AND_LOG = sa.text(
    """
    WITH noted AS (
        INSERT INTO webhook_events (event_id, payment_id, received_at)
        VALUES (:event_id, :payment_id, CAST(:now AS TIMESTAMP WITH TIME ZONE))
        ON CONFLICT DO NOTHING
        RETURNING event_id
    ), claimed AS (
        UPDATE orders SET
            payment_verdict = CAST(:verdict AS VARCHAR),
            payment_event_id = CAST(:event_id AS VARCHAR),
            updated_at = CAST(:now AS TIMESTAMP WITH TIME ZONE),
            payment_state = CASE WHEN CAST(:captured AS BOOLEAN)
                THEN CAST(:captured_state AS VARCHAR) ELSE payment_state END
        WHERE payment_id = CAST(:payment_id AS VARCHAR)
            AND payment_verdict = CAST(:awaiting AS VARCHAR)
            AND payment_deadline > CAST(:now AS TIMESTAMP WITH TIME ZONE)
            AND total_cents = CAST(:amount AS INTEGER)
            AND EXISTS (SELECT 1 FROM noted)
        RETURNING order_id, checkout_key, created_at
    ), logged AS (
        INSERT INTO order_events (order_id, type, detail, at, once_key)
        SELECT order_id, CAST(:type AS VARCHAR), CAST(:detail AS TEXT),
            CAST(:now AS TIMESTAMP WITH TIME ZONE), CAST(:once_key AS VARCHAR)
        FROM claimed
        ON CONFLICT DO NOTHING
        RETURNING order_id
    ), counted AS (
        INSERT INTO outbox_sequences (aggregate, aggregate_id, last_seq)
        SELECT CAST(:aggregate AS VARCHAR), order_id, 1 FROM logged
        ON CONFLICT (aggregate, aggregate_id)
        DO UPDATE SET last_seq = outbox_sequences.last_seq + 1
        RETURNING aggregate_id, last_seq
    ), published AS (
        INSERT INTO outbox (event_id, aggregate, aggregate_id, seq, type, at, payload)
        SELECT CAST(:outbox_event_id AS VARCHAR), CAST(:aggregate AS VARCHAR), aggregate_id,
            last_seq, CAST(:type AS VARCHAR), CAST(:now AS TIMESTAMP WITH TIME ZONE),
            CAST(:payload AS TEXT)
        FROM counted
        RETURNING seq
    )
    SELECT order_id, checkout_key, created_at FROM claimed
    """
).columns(
    sa.column("order_id", sa.BigInteger),
    sa.column("checkout_key", sa.String),
    sa.column("created_at", UTCDateTime),
)


async def remember_webhook_event(db: Db, event_id: str, payment_id: str, now: datetime) -> str:
    """Note which payment a webhook event is about; returns the payment it was first
    seen for (this one, unless the event ID was already used for another)."""
    await db.execute(
        _insert_ignoring_duplicates(db, webhook_events).values(
            event_id=event_id, payment_id=payment_id, received_at=now
        )
    )
    result = await db.execute(
        sa.select(webhook_events.c.payment_id).where(webhook_events.c.event_id == event_id)
    )
    first: str = result.scalar_one()
    return first


async def close_verdict(db: Db, order_id: int) -> PaymentVerdict:
    """Settle the payment: if no verdict arrived, it timed out. Returns the verdict."""
    await db.execute(
        sa.update(orders)
        .where(
            orders.c.order_id == order_id,
            orders.c.payment_verdict == PaymentVerdict.AWAITING.value,
        )
        .values(payment_verdict=PaymentVerdict.TIMED_OUT.value, updated_at=utcnow())
    )
    result = await db.execute(
        sa.select(orders.c.payment_verdict).where(orders.c.order_id == order_id)
    )
    return PaymentVerdict(result.scalar_one())


async def set_payment_state(db: Db, order_id: int, *, old: Sequence[str | None], new: str) -> bool:
    """Move the money's state from one of `old` to `new`, once."""
    state = orders.c.payment_state
    allowed = [value for value in old if value is not None]
    condition: sa.ColumnElement[bool] = state.in_(allowed)
    if None in old:
        condition = sa.or_(state.is_(None), condition)
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, condition)
        .values(payment_state=new, updated_at=utcnow()),
    )


async def set_status(
    db: Db, order_id: int, *, old: OrderStatus, new: OrderStatus, **values: Any
) -> bool:
    """Advance the order's status along one edge of its state machine, once."""
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.status == old.value)
        .values(status=new.value, updated_at=utcnow(), **values),
    )


# On PostgreSQL a status change and its log entries go in as one statement: the
# conditional UPDATE, then the entries only if it matched (`moved`). The writes of
# set_status and append_events, in their order, for one round trip instead of two; in a
# connection outside a transaction (`durability.write_alone`), one instead of four.
_ADVANCE = """
    WITH moved AS (
        UPDATE orders
        SET status = CAST(:new AS VARCHAR), updated_at = CAST(:at AS TIMESTAMP WITH TIME ZONE)
            {also}
        WHERE order_id = CAST(:owner_id AS BIGINT) AND status = CAST(:old AS VARCHAR)
        RETURNING order_id
    ),"""
ADVANCE_AND_LOG = sa.text(
    _ADVANCE.format(also="")
    + log_many_ctes(Aggregate.ORDER, "WHERE EXISTS (SELECT 1 FROM moved)")
    + "SELECT order_id FROM moved"
)
ADVANCE_SHIPPED_AND_LOG = sa.text(
    _ADVANCE.format(
        also=", tracking_number = CAST(:tracking_number AS VARCHAR),"
        " dispatch_eta = CAST(:dispatch_eta AS TIMESTAMP WITH TIME ZONE)"
    )
    + log_many_ctes(Aggregate.ORDER, "WHERE EXISTS (SELECT 1 FROM moved)")
    + "SELECT order_id FROM moved"
)


async def advance_and_log(
    db: Db,
    order_id: int,
    *,
    old: OrderStatus,
    new: OrderStatus,
    log: Sequence[tuple[OrderEvent, str]],
    tracking_number: str | None = None,
    dispatch_eta: datetime | None = None,
) -> bool:
    """`set_status` along one edge, and only if it moved, `append_events(log)`: True if
    it moved. Once, as each of them is. One statement on PostgreSQL; a tracking number
    and dispatch deadline, given together, are set with the status."""
    shipped = {"tracking_number": tracking_number, "dispatch_eta": dispatch_eta}
    if (tracking_number is None) != (dispatch_eta is None):
        raise ValueError("a tracking number and a dispatch deadline go together")
    values = shipped if tracking_number is not None else {}
    if not is_postgres(db):
        moved = await set_status(db, order_id, old=old, new=new, **values)
        if moved:
            await append_events(db, order_id, log)
        return moved
    result = await db.execute(
        ADVANCE_SHIPPED_AND_LOG if values else ADVANCE_AND_LOG,
        {
            **log_many_parameters(order_id, _keyed(log), utcnow()),
            "old": old.value,
            "new": new.value,
            **values,
        },
    )
    return result.first() is not None


async def cancel_order(db: Db, checkout_key: str, reason: str) -> int | None:
    """Cancel the checkout's order unless it already ended; returns the order cancelled."""
    result = await db.execute(
        sa.update(orders)
        .where(orders.c.checkout_key == checkout_key, orders.c.status.not_in(TERMINAL))
        .values(status=OrderStatus.CANCELLED.value, cancel_reason=reason, updated_at=utcnow())
        .returning(orders.c.order_id)
    )
    order_id: int | None = result.scalar_one_or_none()
    return order_id


async def payment_of(db: Db, order_id: int) -> tuple[str | None, str | None]:
    """The order's payment verdict and the state of its money."""
    result = await db.execute(
        sa.select(orders.c.payment_verdict, orders.c.payment_state).where(
            orders.c.order_id == order_id
        )
    )
    row = result.one()
    return row.payment_verdict, row.payment_state
