"""The watchdog: finds orders no live workflow drives any more, and resolves each one.

A checkout's workflow normally carries its order to DISPATCHED or CANCELLED, and DBOS
recovers it after a crash. Three things can still strand an order:

- its workflow is PENDING on an executor slot no process serves any more (fewer
  workers than before). The watchdog *takes it over*: same workflow ID, same history,
  carried on by this deployment from its last completed step;
- its workflow is PENDING under an earlier application version (a deploy). DBOS only
  recovers workflows of its own version, so each process takes over its slot's
  workflows of earlier versions at start-up (`take_over_earlier_versions`), and the
  watchdog those of slots that are gone. Either way only a workflow whose name this
  code still registers with the same step list is carried on (`RESUMABLE`); it is
  never resumed under a different step list;
- its workflow ended without ending the order (ERROR, CANCELLED by hand, gone). The
  watchdog *resolves* it with a `resolve_order` workflow (`checkout.py`).

It runs as a DBOS scheduled workflow every minute, and on demand from the operations
API. Each order is handled on its own: one that fails is logged, counted and tried
again at the next pass, and the pass goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dbos import DBOS, SetWorkflowID, WorkflowStatus

from widget_store import queries
from widget_store.checkout import resolve_order
from widget_store.checkpoints import Checkpoint, Workflow, is_node_saga, resolve_order_id
from widget_store.domain import UnfinishedOrder
from widget_store.durability import ACTIVE, services, step, take_over

__all__ = ["UnfinishedOrder", "WatchdogPage", "WatchdogReport", "schedule", "watchdog_workflow"]

SCHEDULE_NAME = "widget-store-watchdog"
SCHEDULE = "0 * * * * *"  # every minute
# Workflow names whose step lists are registered by this code exactly as they were
# recorded: a workflow of one of them may be carried on under this version.
RESUMABLE = frozenset(
    {
        Workflow.CHECKOUT,
        Workflow.RESOLVE_ORDER,
        Workflow.CHECKOUT_V1,
        Workflow.RESOLVE_ORDER_V1,
        Workflow.BOOK_TRIP,  # taken over at start-up by a later version, like a checkout
    }
)
# A watchdog pass holds nothing the next pass does not work out again: an old one that
# was cut short is cancelled rather than carried on.
DISPOSABLE = frozenset({Workflow.WATCHDOG, Workflow.WATCHDOG_V2, Workflow.WATCHDOG_V1})
# Unfinished orders a pass reads per step (and so per checkpoint).
PAGE = 500


@dataclass
class WatchdogReport:
    checked: int = 0
    resumed: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # tried again at the next pass


def _orphaned(workflow: WorkflowStatus) -> bool:
    svc = services()
    return workflow.app_version != svc.app_version or workflow.executor_id not in svc.executors


@dataclass(frozen=True)
class WatchdogPage:
    """One page of unfinished orders, as a pass's step saw it: how many it read, the ones
    no live workflow drives (with the workflows of theirs that exist), and where the next
    page starts (None: this was the last)."""

    checked: int
    orders: list[UnfinishedOrder]
    workflows: dict[str, WorkflowStatus]
    next_after: int | None


@DBOS.workflow(name=Workflow.WATCHDOG.value)
async def watchdog_workflow(scheduled_at: Any, context: Any) -> WatchdogReport:
    """One watchdog pass (the schedule's workflow: it receives the scheduled time).

    It walks every unfinished order older than `stuck_after_s`, a page at a time, oldest
    first. A page's step keeps only the orders no live workflow drives, so a store with
    thousands of checkouts healthily waiting for payment records a few bytes per page,
    not the orders themselves, and an order stranded behind them is still reached.
    """
    older_than = scheduled_at - timedelta(seconds=services().stuck_after_s)
    report = WatchdogReport()
    after: int | None = 0
    while after is not None:
        page = await find_stranded_orders(older_than, after)
        report.checked += page.checked
        await look_after_each(page.orders, page.workflows, report)
        after = page.next_after
    report_trouble(report)
    return report


async def look_after_each(
    orders: list[UnfinishedOrder], workflows: dict[str, WorkflowStatus], report: WatchdogReport
) -> None:
    for order in orders:
        try:
            await look_after(order, workflows, report)
        except Exception as failure:  # one order's trouble must not stop the others
            report.failed.append(order.order_id)
            DBOS.logger.error("watchdog: order %s: %r", order.order_id, failure)


def report_trouble(report: WatchdogReport) -> None:
    if report.resumed or report.resolved or report.failed:
        DBOS.logger.warning(
            "watchdog: resumed %s, resolved %s, failed %s",
            report.resumed,
            report.resolved,
            report.failed,
        )


@step(Checkpoint.FIND_STRANDED_ORDERS)
async def find_stranded_orders(older_than: datetime, after_id: int) -> WatchdogPage:
    """The next page of unfinished orders after `after_id`, less the ones whose checkout
    workflow is running in a live process (a read, and DBOS's workflow list: a second run
    reads again and changes nothing)."""
    async with services().engine.connect() as db:
        rows = await queries.unfinished_orders(db, older_than, after_id=after_id, limit=PAGE)
    orders = [unfinished_order(row) for row in rows]
    checkouts = await _workflows([o.checkout_key for o in orders])
    stranded = [o for o in orders if not _driven(checkouts.get(o.checkout_key))]
    resolvers = await _workflows([r for o in stranded for r in resolvers_of(o)])
    ids = {o.checkout_key for o in stranded} | set(resolvers)
    next_after = orders[-1].order_id if len(rows) == PAGE else None
    return WatchdogPage(
        checked=len(orders),
        orders=stranded,
        workflows={i: w for i, w in (checkouts | resolvers).items() if i in ids},
        next_after=next_after,
    )


def unfinished_order(row: Any) -> UnfinishedOrder:
    return UnfinishedOrder(
        row.order_id,
        row.checkout_key,
        row.status,
        row.payment_id,
        row.total_cents,
        row.shipping_address,
    )


async def _workflows(ids: list[str]) -> dict[str, WorkflowStatus]:
    if not ids:
        return {}
    found = await DBOS.list_workflows_async(workflow_ids=ids, load_input=False, load_output=False)
    return {w.workflow_id: w for w in found}


def _driven(checkout: WorkflowStatus | None) -> bool:
    """Whether a live process runs (or will recover) this checkout's workflow."""
    return checkout is not None and checkout.status in ACTIVE and not _orphaned(checkout)


def resolvers_of(order: UnfinishedOrder) -> tuple[str, str]:
    """The IDs a resolving workflow of this order has: today's, and version 0.1's."""
    return resolve_order_id(order.order_id), f"resolve-{order.order_id}"


def _resolving(workflow: WorkflowStatus | None) -> bool:
    # By name too: a checkout key may spell "resolve-7", version 0.1's resolver ID.
    return (
        workflow is not None
        and workflow.status in ACTIVE
        and workflow.name in (Workflow.RESOLVE_ORDER, Workflow.RESOLVE_ORDER_V1)
    )


async def look_after(
    order: UnfinishedOrder, workflows: dict[str, WorkflowStatus], report: WatchdogReport
) -> None:
    if is_node_saga(order.checkout_key):
        # `widget-store node`'s saga: a workflow of another DBOS application, which this
        # code does not register; the node recovers it itself when it starts again.
        return
    checkout = workflows.get(order.checkout_key)
    if checkout is not None and checkout.status in ACTIVE:
        if _driven(checkout):
            return  # a live process will recover or is running it
        if checkout.name not in RESUMABLE:
            raise RuntimeError(f"workflow {checkout.name!r} has no step list registered here")
        await resume_orphan(order.checkout_key, services().app_version)
        report.resumed.append(order.order_id)
        return
    for resolver in (workflows.get(i) for i in resolvers_of(order)):
        if resolver is not None and _resolving(resolver):  # already being resolved
            if _orphaned(resolver):
                await resume_orphan(resolver.workflow_id, services().app_version)
                report.resumed.append(order.order_id)
            return
    with SetWorkflowID(resolve_order_id(order.order_id)):
        await DBOS.start_workflow_async(resolve_order, order)
    report.resolved.append(order.order_id)


@step(Checkpoint.RESUME_ORPHAN)
async def resume_orphan(workflow_id: str, app_version: str) -> bool:
    """Take over a workflow nobody will recover: same ID, same history, this version."""
    return await take_over(workflow_id, app_version)


async def take_over_earlier_versions() -> list[str]:
    """At start-up: carry on this slot's workflows that an earlier version left running.

    The process that ran them had this executor ID (a worker slot keeps its ID across
    restarts and deploys), so it is gone. Returns the IDs taken over.
    """
    svc = services()
    stranded = await DBOS.list_workflows_async(
        status=list(ACTIVE),
        executor_id=DBOS.executor_id,
        load_input=False,
        load_output=False,
    )
    taken: list[str] = []
    for workflow in stranded:
        if workflow.app_version == svc.app_version:
            continue  # DBOS recovers its own version
        if workflow.name in DISPOSABLE:
            await DBOS.cancel_workflow_async(workflow.workflow_id)
        elif workflow.name in RESUMABLE:
            if await take_over(workflow.workflow_id, svc.app_version):
                taken.append(workflow.workflow_id)
        else:
            DBOS.logger.error(
                "workflow %s (%s, version %s) has no step list registered here; left alone",
                workflow.workflow_id,
                workflow.name,
                workflow.app_version,
            )
    if taken:
        DBOS.logger.warning("took over %d workflows of earlier versions", len(taken))
    return taken


def schedule() -> None:
    """(Re)declare the watchdog's schedule; every process may call it, it is idempotent.

    The scheduled workflows' IDs (`sched-<name>-<ISO time with +00:00>`) hold a `+`,
    which the checkout key pattern refuses: no checkout can take one first.
    """
    workflow_fn: Any = watchdog_workflow  # the schedule ignores the report it returns
    DBOS.apply_schedules(
        [{"schedule_name": SCHEDULE_NAME, "workflow_fn": workflow_fn, "schedule": SCHEDULE}]
    )
