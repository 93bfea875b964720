"""The saga's writes to an order, its stock and its event log.

Each write a saga step or compensation makes is a conditional UPDATE or an insert
keyed by something unique, so running it twice changes nothing the second time. That
is what makes the steps idempotent, and the WHERE clause of each says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from widget_store import order_watch
from widget_store.domain import (
    LineItem,
    OrderEvent,
    OrderStatus,
    PaymentVerdict,
    PricedLine,
    ShortItem,
    shortages,
)
from widget_store.queries._base import TERMINAL, Db, changed_one_row, utcnow
from widget_store.schema import order_events, order_items, orders, products


async def append_event(db: Db, order_id: int, event: OrderEvent, detail: str = "") -> None:
    order_watch.touched(order_id)
    await db.execute(
        sa.insert(order_events).values(
            order_id=order_id, type=event.value, detail=detail, at=utcnow()
        )
    )


async def insert_order(
    db: Db,
    *,
    checkout_key: str,
    fingerprint: str,
    lines: Sequence[PricedLine],
    total_cents: int,
    shipping_address: str,
    payment_id: str,
) -> int:
    """Insert a PENDING order with its lines; the checkout key is unique, so only once."""
    now = utcnow()
    result = await db.execute(
        sa.insert(orders)
        .values(
            checkout_key=checkout_key,
            fingerprint=fingerprint,
            status=OrderStatus.PENDING.value,
            total_cents=total_cents,
            shipping_address=shipping_address,
            payment_id=payment_id,
            reservation="none",
            created_at=now,
            updated_at=now,
        )
        .returning(orders.c.order_id)
    )
    order_id: int = result.scalar_one()
    await db.execute(
        sa.insert(order_items),
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
    return order_id


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
    return await changed_one_row(
        db,
        sa.update(products)
        .where(products.c.product_id == product_id, products.c.inventory + delta >= 0)
        .values(inventory=products.c.inventory + delta),
    )


async def reserve_stock(db: Db, order_id: int) -> list[ShortItem]:
    """Hold stock for every line of the order, or for none of them.

    Each decrement is one conditional UPDATE, atomic at READ COMMITTED, so concurrent
    checkouts never oversell. Rows are locked in product order, so two carts sharing
    products cannot deadlock. Idempotent through the order's `reservation` column.
    """
    claimed = await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.reservation == "none")
        .values(reservation="held", updated_at=utcnow()),
    )
    if not claimed:
        return []  # already held by an earlier run of this step
    lines = await order_lines(db, order_id)
    taken: list[LineItem] = []
    for line in lines:
        if not await _adjust_stock(db, line.product_id, -line.quantity):
            # Give back what this transaction took; those rows are still locked by us.
            for done in taken:
                await _adjust_stock(db, done.product_id, done.quantity)
            await db.execute(
                sa.update(orders).where(orders.c.order_id == order_id).values(reservation="none")
            )
            stock = await _stock_of(db, [item.product_id for item in lines])
            # The line that failed was short, even if a release has refilled it since.
            failed = ShortItem(line.product_id, line.quantity, stock.get(line.product_id, 0))
            return shortages(lines, stock) or [failed]
        taken.append(line)
    return []


async def release_stock(db: Db, order_id: int) -> list[LineItem]:
    """Put the order's held stock back on the shelf, once (held -> released)."""
    released = await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.reservation == "held")
        .values(reservation="released", updated_at=utcnow()),
    )
    if not released:
        return []
    lines = await order_lines(db, order_id)
    for line in lines:
        await _adjust_stock(db, line.product_id, line.quantity)
    return lines


async def open_payment(db: Db, order_id: int, deadline: datetime) -> bool:
    """Start waiting for the provider's verdict, until the deadline (once)."""
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.payment_verdict.is_(None))
        .values(
            payment_verdict=PaymentVerdict.AWAITING.value,
            payment_deadline=deadline,
            updated_at=utcnow(),
        ),
    )


async def claim_verdict(
    db: Db, payment_id: str, verdict: PaymentVerdict, event_id: str, now: datetime
) -> bool:
    """Record the provider's verdict if the payment is still open and in time.

    This single conditional UPDATE is the arbiter between a webhook and the deadline:
    whichever commits first decides the payment, and the loser changes nothing.
    """
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(
            orders.c.payment_id == payment_id,
            orders.c.payment_verdict == PaymentVerdict.AWAITING.value,
            orders.c.payment_deadline > now,
        )
        .values(payment_verdict=verdict.value, payment_event_id=event_id, updated_at=now),
    )


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


async def set_payment_state(db: Db, order_id: int, *, old: str | None, new: str) -> bool:
    """Move the money's state (None -> captured -> refunded), once."""
    state = orders.c.payment_state
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, state.is_(None) if old is None else state == old)
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


async def mark_refunded(db: Db, order_id: int) -> bool:
    """Record the refund once, whether or not the capture itself was recorded first."""
    state = orders.c.payment_state
    return await changed_one_row(
        db,
        sa.update(orders)
        .where(orders.c.order_id == order_id, sa.or_(state.is_(None), state == "captured"))
        .values(payment_state="refunded", updated_at=utcnow()),
    )
