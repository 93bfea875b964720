"""The watchdog pass before it walked the unfinished orders in pages (`watchdog.v2`).

A v2 pass read the 500 oldest unfinished orders in one step (`find_unfinished_orders`),
then their workflows in DBOS's own `DBOS.listWorkflows` step, and looked after each.
With 500 checkouts healthily waiting for payment, those 500 were all it ever saw. The
schedule now starts `watchdog.v3` (`widget_store/watchdog.py`); this one stays
registered, step for step, so that a v2 pass cut short by a crash or a deploy of the
same version replays its two recorded steps and finishes as it began. It is never
started anew. Delete it once no `watchdog.v2` workflow is PENDING.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dbos import DBOS

from widget_store import queries
from widget_store.checkpoints import Checkpoint, Workflow
from widget_store.domain import UnfinishedOrder
from widget_store.durability import services, step
from widget_store.watchdog import (
    WatchdogReport,
    look_after_each,
    report_trouble,
    resolvers_of,
    unfinished_order,
)


@DBOS.workflow(name=Workflow.WATCHDOG_V2.value)
async def watchdog_v2_workflow(scheduled_at: Any, context: Any) -> WatchdogReport:
    """A v2 pass: one page of at most 500 orders, their workflows, each looked after."""
    older_than = scheduled_at - timedelta(seconds=services().stuck_after_s)
    orders = await find_unfinished_orders(older_than)
    report = WatchdogReport(checked=len(orders))
    if not orders:
        return report
    ids = [o.checkout_key for o in orders] + [r for o in orders for r in resolvers_of(o)]
    workflows = {
        w.workflow_id: w
        for w in await DBOS.list_workflows_async(
            workflow_ids=ids, load_input=False, load_output=False
        )
    }
    await look_after_each(orders, workflows, report)
    report_trouble(report)
    return report


@step(Checkpoint.FIND_UNFINISHED_ORDERS)
async def find_unfinished_orders(older_than: datetime) -> list[UnfinishedOrder]:
    """The 500 oldest orders neither DISPATCHED nor CANCELLED, created before `older_than`
    (a read)."""
    async with services().engine.connect() as db:
        rows = await queries.unfinished_orders(db, older_than)
    return [unfinished_order(row) for row in rows]
