"""The state behind the health gauges and the /ops aggregates: one set of queries for both.

Checkouts waiting for payment, the oldest of them, those past their deadline, open dead
letters, the owners of DBOS's live workflows, and the outbox's lag. /metrics and
/ops/summary both read them here, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store.domain import OrderStatus, PaymentVerdict
from widget_store.events import OutboxLag
from widget_store.queries._base import Db
from widget_store.queries.outbox import outbox_lag
from widget_store.schema import dead_letters, orders

WAITING = sa.and_(
    orders.c.status == OrderStatus.PENDING.value,
    orders.c.payment_verdict == PaymentVerdict.AWAITING.value,
)
OPEN_DEAD_LETTER = dead_letters.c.status != "resolved"

# DBOS's system table of workflows, the few columns read here. It lives in the store's
# own database: in the `dbos` schema on PostgreSQL (DBOS's default), unqualified in the
# embedded SQLite file. Its stored format is DBOS's; these columns are the ones its own
# recovery reads (status, executor, version), so they are the least likely to move.
DBOS_SCHEMA = "dbos"
workflow_status = sa.Table(
    "workflow_status",
    sa.MetaData(schema=DBOS_SCHEMA),
    sa.Column("workflow_uuid", sa.Text, primary_key=True),
    sa.Column("status", sa.Text),
    sa.Column("executor_id", sa.Text),
    sa.Column("application_version", sa.Text),
)


@dataclass(frozen=True)
class StoreHealth:
    """What the health gauges report, read at one moment."""

    now: datetime
    waiting_for_payment: int
    past_payment_deadline: int
    oldest_waiting: Any  # the oldest waiting order's row (order_id, created_at, ...), or None
    dead_letters_open: int
    orphaned_sagas: int
    outbox: OutboxLag  # how far the event stream is behind

    @property
    def oldest_waiting_age_s(self) -> float:
        if self.oldest_waiting is None:
            return 0.0
        created_at: datetime = self.oldest_waiting.created_at
        return max(0.0, (self.now - created_at).total_seconds())


@dataclass(frozen=True)
class WorkflowOwners:
    """How many live workflows one (status, executor, version) owns."""

    status: str
    executor_id: str | None
    app_version: str | None
    count: int


async def store_health(
    db: AsyncConnection, now: datetime, *, executors: frozenset[str], app_version: str
) -> StoreHealth:
    """Every health figure, for /metrics and /ops/summary alike."""
    waiting, past_deadline, oldest = await waiting_checkouts(db, now)
    return StoreHealth(
        now=now,
        waiting_for_payment=waiting,
        past_payment_deadline=past_deadline,
        oldest_waiting=oldest,
        dead_letters_open=await open_dead_letters(db),
        orphaned_sagas=orphaned(await live_workflow_owners(db), executors, app_version),
        outbox=await outbox_lag(db, now),
    )


async def waiting_checkouts(db: Db, now: datetime) -> tuple[int, int, Any]:
    """Checkouts waiting for the payment verdict, those of them past their deadline, and
    the oldest one's row (None when none waits)."""
    counts = (
        await db.execute(
            sa.select(
                sa.func.count(),
                sa.func.count().filter(orders.c.payment_deadline < now),
            ).where(WAITING)
        )
    ).one()
    oldest = (
        await db.execute(
            sa.select(orders.c.order_id, orders.c.created_at, orders.c.payment_deadline)
            .where(WAITING)
            .order_by(orders.c.order_id)
            .limit(1)
        )
    ).first()
    return counts[0], counts[1], oldest


async def open_dead_letters(db: Db) -> int:
    """Parked compensations not yet resolved (parked, or being retried)."""
    result = await db.execute(sa.select(sa.func.count()).where(OPEN_DEAD_LETTER))
    count: int = result.scalar_one()
    return count


async def live_workflow_owners(db: AsyncConnection) -> list[WorkflowOwners]:
    """DBOS's PENDING and ENQUEUED workflows, counted by executor and version."""
    table = workflow_status
    query = (
        sa.select(table.c.status, table.c.executor_id, table.c.application_version, sa.func.count())
        .where(table.c.status.in_(("PENDING", "ENQUEUED")))
        .group_by(table.c.status, table.c.executor_id, table.c.application_version)
    )
    if db.dialect.name == "sqlite":  # no schemas there: the table is unqualified
        query = query.execution_options(schema_translate_map={DBOS_SCHEMA: None})
    result = await db.execute(query)
    return [WorkflowOwners(*row) for row in result]


def orphaned(owners: Iterable[WorkflowOwners], executors: frozenset[str], app_version: str) -> int:
    """Live workflows no process of this deployment will ever run.

    DBOS recovers a PENDING workflow only in a process with the same executor ID and
    application version, so one on another version, or on an executor slot this
    deployment no longer has, waits forever (until the watchdog resumes it). An
    ENQUEUED one is dequeued by any process of its version, whatever its executor.
    """
    total = 0
    for owner in owners:
        wrong_version = owner.app_version is not None and owner.app_version != app_version
        gone_executor = owner.status == "PENDING" and owner.executor_id not in executors
        if wrong_version or gone_executor:
            total += owner.count
    return total
