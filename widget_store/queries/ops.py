"""The SQL behind the operations view: counts, a filtered order list, an order's workflow.

Operators think in stages rather than raw statuses: an order that is PENDING may be
starting, waiting for the shopper's payment, or already being undone. The stages are
domain words (`domain.Stage`, `domain.stage_of`); `STAGE_FILTERS` is each filter in SQL.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from widget_store.domain import OrderStatus, StageFilter, stage_of
from widget_store.queries._base import TERMINAL, Db
from widget_store.queries.health import WAITING, StoreHealth
from widget_store.schema import orders

RATIO_WINDOW = timedelta(hours=1)


_WAITING = WAITING
STAGE_FILTERS: dict[StageFilter, sa.ColumnElement[bool]] = {
    StageFilter.PENDING: orders.c.status == OrderStatus.PENDING.value,
    StageFilter.WAITING_FOR_PAYMENT: _WAITING,
    StageFilter.PAID: orders.c.status == OrderStatus.PAID.value,
    StageFilter.DISPATCHED: orders.c.status == OrderStatus.DISPATCHED.value,
    StageFilter.COMPENSATED: orders.c.status == OrderStatus.CANCELLED.value,
}


def _age_s(created_at: datetime, now: datetime) -> float:
    return round(max(0.0, (now - created_at).total_seconds()), 1)


async def summary(db: Db, health: StoreHealth) -> dict[str, Any]:
    """Orders by status, the compensation ratio of the last hour, the health figures
    /metrics reports too (waiting for payment, the oldest of them, stuck sagas), and how
    far the event stream is behind (the outbox's unsent events)."""
    now = health.now
    by_status = await db.execute(
        sa.select(orders.c.status, sa.func.count()).group_by(orders.c.status)
    )
    counts = {status.value: 0 for status in OrderStatus}
    counts.update({row[0]: row[1] for row in by_status})

    # An order's last write is its outcome (compensations end with cancel_order), so
    # updated_at is when it finished.
    finished = await db.execute(
        sa.select(orders.c.status, sa.func.count())
        .where(orders.c.status.in_(TERMINAL), orders.c.updated_at >= now - RATIO_WINDOW)
        .group_by(orders.c.status)
    )
    ended = {row[0]: row[1] for row in finished}
    total = sum(ended.values())
    compensated = ended.get(OrderStatus.CANCELLED.value, 0)

    oldest = health.oldest_waiting
    return {
        "counts": counts,
        "waiting_for_payment": health.waiting_for_payment,
        "last_hour": {
            "finished": total,
            "compensated": compensated,
            "compensation_ratio": round(compensated / total, 3) if total else None,
        },
        "oldest_waiting": None
        if oldest is None
        else {
            "order_id": oldest.order_id,
            "created_at": oldest.created_at,
            "age_s": _age_s(oldest.created_at, now),
            "payment_deadline": oldest.payment_deadline,
        },
        "outbox": asdict(health.outbox),
        "stuck": {
            "past_payment_deadline": health.past_payment_deadline,
            "dead_letters_open": health.dead_letters_open,
            "orphaned_sagas": health.orphaned_sagas,
        },
        "now": now,
    }


async def recent_orders(
    db: Db, now: datetime, *, stage: StageFilter | None, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """Recent orders, newest first, optionally in one stage; keyset-paged on the order ID."""
    query = sa.select(orders).order_by(orders.c.order_id.desc()).limit(limit)
    if stage is not None:
        query = query.where(STAGE_FILTERS[stage])
    if before is not None:
        query = query.where(orders.c.order_id < before)
    return [
        {
            "order_id": row.order_id,
            "status": row.status,
            "stage": stage_of(row.status, row.payment_verdict).value,
            "total_cents": row.total_cents,
            "cancel_reason": row.cancel_reason,
            "created_at": row.created_at,
            "age_s": _age_s(row.created_at, now),
        }
        for row in await db.execute(query)
    ]


async def workflow_id_of(db: Db, order_id: int) -> str | None:
    """The order's checkout key, which is its DBOS workflow's ID."""
    result = await db.execute(sa.select(orders.c.checkout_key).where(orders.c.order_id == order_id))
    key: str | None = result.scalar_one_or_none()
    return key
