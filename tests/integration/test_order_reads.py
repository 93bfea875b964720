"""Reading an order while its saga moves on: the status is never older than the log."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from widget_store import queries
from widget_store.config import Settings
from widget_store.schema import order_events, orders


def test_a_step_committing_mid_read_never_shows_its_event_without_its_status(
    settings: Settings,
) -> None:
    now = dt.datetime.now(dt.UTC)
    writer = sa.create_engine(settings.database.sync_url)
    with writer.begin() as conn:
        order_id = conn.execute(
            sa.insert(orders)
            .values(
                checkout_key="mid-read",
                fingerprint="f",
                status="PENDING",
                total_cents=100,
                shipping_address="1 Main St",
                payment_id="pay_mid_read",
                created_at=now,
                updated_at=now,
            )
            .returning(orders.c.order_id)
        ).scalar_one()
        conn.execute(sa.insert(order_events).values(order_id=order_id, type="placed", at=now))

    def cancel() -> None:  # what cancel_order commits: the status and its event together
        with writer.begin() as conn:
            conn.execute(sa.update(orders).values(status="CANCELLED"))
            conn.execute(
                sa.insert(order_events).values(order_id=order_id, type="checkout_failed", at=now)
            )

    reads = 0
    cancelled_after_read: int | None = None

    async def read_while_cancelling() -> dict[str, Any] | None:
        engine = create_async_engine(settings.database.async_url)

        def after_first_read(*_: Any) -> None:
            nonlocal reads, cancelled_after_read
            reads += 1
            if reads == 1:
                cancel()  # a step commits between the reader's statements
                cancelled_after_read = reads

        sa.event.listen(engine.sync_engine, "after_cursor_execute", after_first_read)
        try:
            async with engine.connect() as conn:
                return await queries.order_details(conn, order_id)
        finally:
            await engine.dispose()

    try:
        order = asyncio.run(read_while_cancelling())
    finally:
        writer.dispose()

    assert order is not None
    assert cancelled_after_read == 1, "the cancellation committed after the first statement"
    seen = ([event["type"] for event in order["events"]], order["status"])
    if settings.database.is_sqlite:
        # Each statement sees its own moment (SQLite's driver opens no transaction for
        # reads). The log was read first, so the status is newer, never older; read the
        # other way round, this would be (["placed", "checkout_failed"], "PENDING").
        assert reads >= 2
        assert seen == (["placed"], "CANCELLED")
    else:
        # One statement reads the row, the items and the log: one snapshot, taken before
        # the cancellation committed, so it shows neither its status nor its event.
        assert reads == 1
        assert seen == (["placed"], "PENDING")
