"""Reading orders back: by key, in full with items and history, in pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store.domain import OrderStatus, dispatch_remaining
from widget_store.queries._base import TERMINAL, Db, utcnow
from widget_store.schema import order_events, order_items, orders


async def order_by_payment(db: Db, payment_id: str) -> Any:
    result = await db.execute(sa.select(orders).where(orders.c.payment_id == payment_id))
    return result.first()


async def order_by_id(db: Db, order_id: int) -> Any:
    result = await db.execute(sa.select(orders).where(orders.c.order_id == order_id))
    return result.first()


async def order_by_key(db: Db, checkout_key: str) -> Any:
    result = await db.execute(sa.select(orders).where(orders.c.checkout_key == checkout_key))
    return result.first()


def order_state(row: Any) -> dict[str, Any]:
    """The headline of an order, as a webhook conflict reports it."""
    return {
        "order_id": row.order_id,
        "status": row.status,
        "payment_verdict": row.payment_verdict,
        "cancel_reason": row.cancel_reason,
    }


async def order_details(db: AsyncConnection, order_id: int) -> dict[str, Any] | None:
    """The order with its items and event log, as of one moment.

    On PostgreSQL one statement reads the row, the items and the log, so they share one
    snapshot whatever the connection's isolation. Elsewhere the log is read before the
    order row: under READ COMMITTED each read sees its own moment, and a step may commit
    in between. Read this way, the row is never older than the log, so a page that
    long-polls for events after the last one it saw never waits for news it has been
    shown in the log but not in the status.
    """
    if db.dialect.name == "postgresql":
        row = (await db.execute(_ORDER_WITH_ITEMS_AND_LOG, {"order_id": order_id})).first()
        if row is None:
            return None
        items, events = row.items_json, row.events_json
    else:
        events = [
            e._mapping
            for e in await db.execute(
                sa.select(order_events)
                .where(order_events.c.order_id == order_id)
                .order_by(order_events.c.event_id)
            )
        ]
        row = (await db.execute(sa.select(orders).where(orders.c.order_id == order_id))).first()
        if row is None:
            return None
        items = [
            i._mapping
            for i in await db.execute(
                sa.select(order_items)
                .where(order_items.c.order_id == order_id)
                .order_by(order_items.c.product_id)
            )
        ]
    return {
        "order_id": row.order_id,
        "status": row.status,
        "items": [
            {
                "product_id": item["product_id"],
                "quantity": item["quantity"],
                "unit_price_cents": item["unit_price_cents"],
            }
            for item in items
        ],
        "total_cents": row.total_cents,
        "shipping_address": row.shipping_address,
        "payment_url": row.payment_url,
        "access_token": row.access_token,
        "payment_verdict": row.payment_verdict,
        "payment_deadline": row.payment_deadline,
        "tracking_number": row.tracking_number,
        "progress_remaining": dispatch_remaining(
            OrderStatus(row.status), row.dispatch_eta, utcnow()
        ),
        "cancel_reason": row.cancel_reason,
        "created_at": row.created_at,
        "events": [{"type": e["type"], "at": _utc(e["at"]), "detail": e["detail"]} for e in events],
    }


def _utc(at: datetime | str) -> datetime:
    """An event's time: a datetime from a column, ISO text from PostgreSQL's JSON."""
    value = datetime.fromisoformat(at) if isinstance(at, str) else at
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_list(
    table: sa.Table, order_by: sa.ColumnElement[Any], **fields: sa.ColumnElement[Any]
) -> sa.ScalarSelect[Any]:
    """An order's rows of `table` as one JSON array, in order (empty, not null, if none)."""
    pairs = [part for name, column in fields.items() for part in (sa.literal(name), column)]
    rows = sa.func.json_agg(aggregate_order_by(sa.func.json_build_object(*pairs), order_by))
    return (
        sa.select(sa.func.coalesce(rows, sa.literal_column("'[]'::json")))
        .where(table.c.order_id == orders.c.order_id)
        .scalar_subquery()
    )


_ORDER_WITH_ITEMS_AND_LOG = sa.select(
    orders,
    _json_list(
        order_items,
        order_items.c.product_id,
        product_id=order_items.c.product_id,
        quantity=order_items.c.quantity,
        unit_price_cents=order_items.c.unit_price_cents,
    ).label("items_json"),
    _json_list(
        order_events,
        order_events.c.event_id,
        type=order_events.c.type,
        at=order_events.c.at,
        detail=order_events.c.detail,
    ).label("events_json"),
).where(orders.c.order_id == sa.bindparam("order_id"))


async def list_orders(db: Db, *, limit: int, before: int | None) -> list[dict[str, Any]]:
    """Recent orders, newest first, by keyset pagination on the order ID."""
    query = sa.select(orders).order_by(orders.c.order_id.desc()).limit(limit)
    if before is not None:
        query = query.where(orders.c.order_id < before)
    result = await db.execute(query)
    return [
        {
            "order_id": row.order_id,
            "status": row.status,
            "total_cents": row.total_cents,
            "cancel_reason": row.cancel_reason,
            "tracking_number": row.tracking_number,
            "created_at": row.created_at,
        }
        for row in result
    ]


async def unfinished_orders(
    db: Db, older_than: datetime, *, after_id: int = 0, limit: int = 500
) -> list[Any]:
    """Orders not yet DISPATCHED or CANCELLED, created before `older_than`, oldest first:
    at most `limit` of them, from the first whose ID is above `after_id` (a page)."""
    result = await db.execute(
        sa.select(orders)
        .where(
            orders.c.status.not_in(TERMINAL),
            orders.c.created_at < older_than,
            orders.c.order_id > after_id,
        )
        .order_by(orders.c.order_id)
        .limit(limit)
    )
    return list(result)


async def event_count(db: Db, order_id: int) -> int:
    """How many entries the order's event log holds: a cheap "anything new?"."""
    result = await db.execute(
        sa.select(sa.func.count())
        .select_from(order_events)
        .where(order_events.c.order_id == order_id)
    )
    count: int = result.scalar_one()
    return count
