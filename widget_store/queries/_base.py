"""What every query module shares: the connection type, the clock, one-row updates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from widget_store.domain import OrderStatus

Db = AsyncConnection | AsyncSession

TERMINAL = (OrderStatus.DISPATCHED.value, OrderStatus.CANCELLED.value)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def changed_one_row(
    db: Db, statement: sa.Update, parameters: dict[str, Any] | None = None
) -> bool:
    """Run a conditional UPDATE keyed to one row (its values bound from `parameters`, for
    a statement built once); True if it matched (and so changed) it."""
    result = cast("sa.CursorResult[Any]", await db.execute(statement, parameters))
    return result.rowcount == 1
