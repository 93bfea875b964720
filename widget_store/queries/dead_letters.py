"""Compensations parked after repeated failures."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from widget_store.queries._base import Db, changed_one_row, utcnow
from widget_store.schema import dead_letters


async def park_dead_letter(
    db: Db,
    *,
    order_id: int | None = None,
    trip_id: int | None = None,
    workflow_id: str,
    compensation: str,
    error: str,
    attempts: int,
) -> None:
    """Record (or re-record) a compensation that keeps failing as parked: an order's, or
    a trip's (exactly one of `order_id` and `trip_id`). Keyed by (owner, compensation)."""
    if (order_id is None) == (trip_id is None):
        raise ValueError("a dead letter belongs to an order or to a trip")
    owner = (
        dead_letters.c.order_id == order_id
        if order_id is not None
        else dead_letters.c.trip_id == trip_id
    )
    now = utcnow()
    values = {
        "last_error": error[:2000],
        "attempts": attempts,
        "status": "parked",
        "updated_at": now,
    }
    updated = await changed_one_row(
        db,
        sa.update(dead_letters)
        .where(owner, dead_letters.c.compensation == compensation)
        .values(**values),
    )
    if not updated:
        await db.execute(
            sa.insert(dead_letters).values(
                order_id=order_id,
                trip_id=trip_id,
                workflow_id=workflow_id,
                compensation=compensation,
                parked_at=now,
                **values,
            )
        )


async def set_dead_letter_status(db: Db, order_id: int, compensation: str, status: str) -> bool:
    return await changed_one_row(
        db,
        sa.update(dead_letters)
        .where(dead_letters.c.order_id == order_id, dead_letters.c.compensation == compensation)
        .values(status=status, updated_at=utcnow()),
    )


async def dead_letter(db: Db, dead_letter_id: int) -> Any:
    result = await db.execute(
        sa.select(dead_letters).where(dead_letters.c.dead_letter_id == dead_letter_id)
    )
    return result.first()


async def list_dead_letters(db: Db, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    query = sa.select(dead_letters).order_by(dead_letters.c.dead_letter_id.desc()).limit(200)
    if not include_resolved:
        query = query.where(dead_letters.c.status != "resolved")
    result = await db.execute(query)
    return [dict(row._mapping) for row in result]
