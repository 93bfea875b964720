"""The watchdog: finds orders no live workflow drives any more, and resolves each one.

A checkout's workflow normally carries its order to DISPATCHED or CANCELLED, and DBOS
recovers it after a crash. Two things can still strand an order:

- its workflow is PENDING but nobody will ever recover it: it belongs to an application
  version no process runs any more (a deploy changed the version) or to an executor
  slot that no longer exists (fewer workers than before). The watchdog *resumes* it:
  cancel, then rewind it under the current version, so this deployment replays its
  history and carries on from its last completed step under the same workflow ID;
- its workflow ended without ending the order (ERROR, CANCELLED by hand, gone). The
  watchdog *resolves* it with a `resolve_order` workflow: an order already PAID (money
  captured, shipment booked) is completed; anything earlier is compensated from the
  state recorded in the database (refund, cancel the shipment, release stock, cancel).

It runs as a DBOS scheduled workflow every minute, and on demand from the operations API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dbos import DBOS, SetWorkflowID

from widget_store import queries
from widget_store.dead_letters import ParkedCompensations
from widget_store.domain import CancelReason, CreatedOrder, OrderStatus
from widget_store.saga import Saga
from widget_store.steps import (
    cancel_order,
    cancel_shipment,
    complete_dispatch,
    refund_payment,
    release_inventory,
    services,
    session,
    transaction,
)

SCHEDULE_NAME = "widget-store-watchdog"
SCHEDULE = "0 * * * * *"  # every minute
LIVE = ("PENDING", "ENQUEUED", "DELAYED")


@dataclass(frozen=True)
class UnfinishedOrder:
    order_id: int
    checkout_key: str
    status: str
    payment_id: str
    total_cents: int
    shipping_address: str


@dataclass
class WatchdogReport:
    checked: int = 0
    resumed: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


async def _unfinished_orders(older_than: datetime) -> list[UnfinishedOrder]:
    rows = await queries.unfinished_orders(session(), older_than)
    return [
        UnfinishedOrder(
            r.order_id, r.checkout_key, r.status, r.payment_id, r.total_cents, r.shipping_address
        )
        for r in rows
    ]


@DBOS.workflow(name="watchdog")
async def watchdog_workflow(scheduled_at: datetime, context: Any) -> WatchdogReport:
    """One watchdog pass (the schedule's workflow: it receives the scheduled time)."""
    svc = services()
    older_than = scheduled_at - timedelta(seconds=svc.stuck_after_s)
    orders = await transaction("find_unfinished_orders", _unfinished_orders, older_than)
    report = WatchdogReport(checked=len(orders))
    if not orders:
        return report
    workflows = {
        w.workflow_id: w
        for w in await DBOS.list_workflows_async(
            workflow_ids=[o.checkout_key for o in orders], load_input=False, load_output=False
        )
    }
    for order in orders:
        workflow = workflows.get(order.checkout_key)
        if workflow is not None and workflow.status in LIVE:
            if workflow.app_version == svc.app_version and workflow.executor_id in svc.executors:
                continue  # a live process will recover or is running it
            await resume_orphan(order.checkout_key, svc.app_version)
            report.resumed.append(order.order_id)
        else:
            with SetWorkflowID(f"resolve-{order.order_id}"):
                await DBOS.start_workflow_async(resolve_order, order)
            report.resolved.append(order.order_id)
    if report.resumed or report.resolved:
        DBOS.logger.warning(
            "watchdog: resumed orders %s, resolved orders %s", report.resumed, report.resolved
        )
    return report


@DBOS.step(name="resume_orphan")
async def resume_orphan(workflow_id: str, app_version: str) -> None:
    """Take over a workflow nobody will recover: same ID, same history, this version."""
    status = await DBOS.get_workflow_status_async(workflow_id)
    if status is None or status.status not in (*LIVE, "CANCELLED"):
        return
    if status.status != "CANCELLED":
        await DBOS.cancel_workflow_async(workflow_id)
    steps = await DBOS.list_workflow_steps_async(workflow_id)
    next_step = max((step["function_id"] for step in steps), default=0) + 1
    await DBOS.rewind_workflow_async(
        workflow_id, start_step=next_step, application_version=app_version
    )


@DBOS.workflow(name="resolve_order")
async def resolve_order(order: UnfinishedOrder) -> str:
    """End an order whose workflow ended without ending it: finish it or undo it."""
    current = await transaction("read_order_status", _status_of, order.order_id)
    if current == OrderStatus.PAID.value:
        await complete_dispatch(order.order_id)
        return OrderStatus.DISPATCHED.value
    placed = CreatedOrder(
        order.order_id, order.payment_id, order.total_cents, order.shipping_address
    )
    saga = Saga(
        park_after=services().compensation_attempts,
        dead_letters=ParkedCompensations(order.order_id, DBOS.workflow_id or ""),
    )
    # Every undo is safe when its step never ran, so register them all, in step order.
    saga.on_rollback("CancelOrder", lambda reason: cancel_order(order.checkout_key, reason))
    saga.on_rollback("ReleaseReservation", lambda _: release_inventory(order.checkout_key))
    saga.on_rollback("RefundPayment", lambda _: refund_payment(placed))
    saga.on_rollback("CancelShipment", lambda _: cancel_shipment(order.order_id))
    await saga.rollback(CancelReason.STALLED.value)
    return OrderStatus.CANCELLED.value


async def _status_of(order_id: int) -> str:
    row = await queries.order_details(session(), order_id)
    return str(row["status"]) if row else OrderStatus.CANCELLED.value


async def run_now() -> WatchdogReport:
    """A watchdog pass now, for the operations API."""
    handle = await DBOS.start_workflow_async(watchdog_workflow, datetime.now(UTC), None)
    report: WatchdogReport = await handle.get_result()
    return report


def schedule() -> None:
    """(Re)declare the watchdog's schedule; every process may call it, it is idempotent."""
    # The schedule ignores the report the workflow returns for run_now().
    workflow_fn: Any = watchdog_workflow
    DBOS.apply_schedules(
        [{"schedule_name": SCHEDULE_NAME, "workflow_fn": workflow_fn, "schedule": SCHEDULE}]
    )
