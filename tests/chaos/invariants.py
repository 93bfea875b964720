"""What must hold after any storm, read straight from the database once every order settled.

Shared by the chaos runs (PostgreSQL) and the failure matrix (SQLite). A verdict may have
reached the store by a signed webhook posted directly, past the provider's page: the
provider's own record then stays open (it never decided anything), and undoing the order
voids it. So the money is judged by both records: the store's (`orders.payment_state`)
and the provider's (`provider_payments.status`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

STEP_EVENTS = {
    "CreateOrder_ok",
    "ReserveInventory_ok",
    "ReserveInventory_failed",
    "OpenPayment_ok",
    "ChargePayment_ok",
    "ChargePayment_failed",
    "CreateShipment_ok",
    "CreateShipment_failed",
    "Dispatch_started",
    "Dispatch_ok",
    "CancelOrder",
    "ReleaseReservation",
    "RefundPayment",
    "CancelShipment",
    "checkout_complete",
    "checkout_failed",
}


@dataclass
class Check:
    name: str
    violations: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.violations.append(message)


def _rows(conn: sa.Connection, sql: str) -> list[Any]:
    return list(conn.execute(sa.text(sql)))


def check_invariants(
    url: str, initial_stock: Mapping[int, int], restocked: Mapping[int, int] | None = None
) -> list[Check]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return _checks(conn, initial_stock, restocked)
    finally:
        engine.dispose()


def violations(checks: list[Check]) -> list[str]:
    """Every violation, each prefixed with the invariant it breaks."""
    return [f"{check.name}: {v}" for check in checks for v in check.violations]


def _never_decided(payment: Any) -> bool:
    """The provider's page never decided this payment: its verdict came by a direct webhook."""
    return payment.event_id is None


def _checks(
    conn: sa.Connection, initial_stock: Mapping[int, int], restocked: Mapping[int, int] | None
) -> list[Check]:
    restocked = restocked or {}
    orders = {row.order_id: row for row in _rows(conn, "SELECT * FROM orders")}
    items: dict[int, list[Any]] = defaultdict(list)
    for item in _rows(conn, "SELECT * FROM order_items"):
        items[item.order_id].append(item)
    events: dict[int, list[Any]] = defaultdict(list)
    for event in _rows(conn, "SELECT * FROM order_events ORDER BY event_id"):
        events[event.order_id].append(event)
    payments = {p.payment_id: p for p in _rows(conn, "SELECT * FROM provider_payments")}
    shipments = {s.shipment_key: s for s in _rows(conn, "SELECT * FROM carrier_shipments")}
    stock = {p.product_id: p.inventory for p in _rows(conn, "SELECT * FROM products")}
    parked = {
        d.order_id for d in _rows(conn, "SELECT * FROM dead_letters WHERE status != 'resolved'")
    }

    checks = []

    conservation = Check("stock now + units in live orders = initial stock + restocks")
    held: Counter[int] = Counter()
    for order in orders.values():
        if order.reservation == "held":
            for item in items[order.order_id]:
                held[item.product_id] += item.quantity
    for product_id, initial in initial_stock.items():
        left = stock[product_id] + held[product_id]
        expected = initial + restocked.get(product_id, 0)
        if left != expected:
            conservation.fail(
                f"product {product_id}: {stock[product_id]} in stock + {held[product_id]} held"
                f" = {left}, expected {expected}"
            )
    for order in orders.values():
        if order.status == "CANCELLED" and order.reservation == "held":
            conservation.fail(f"order {order.order_id} is cancelled but still holds stock")
    checks.append(conservation)

    settled = Check("every order reached DISPATCHED or CANCELLED")
    for order in orders.values():
        if order.status not in ("DISPATCHED", "CANCELLED") and order.order_id not in parked:
            settled.fail(f"order {order.order_id} is still {order.status}")
    checks.append(settled)

    refunds = Check(
        "every paid-then-cancelled order was refunded exactly once (voided, if never captured)"
    )
    captured_twice = Check("no payment was captured twice, and no money is stranded")
    for order in orders.values():
        payment = payments.get(order.payment_id)
        # The store's own record of the money counts whether or not the provider has one.
        if order.status == "CANCELLED" and order.payment_state == "captured":
            captured_twice.fail(f"order {order.order_id} cancelled, the store still holds money")
        charged = [e for e in events[order.order_id] if e.type == "ChargePayment_ok"]
        if len(charged) > 1:
            captured_twice.fail(f"order {order.order_id} charged {len(charged)} times")
        if payment is None:
            if order.status == "DISPATCHED":
                captured_twice.fail(
                    f"order {order.order_id} dispatched, no payment at the provider"
                )
            continue
        if payment.refunds > 1:
            refunds.fail(f"payment {payment.payment_id} refunded {payment.refunds} times")
        refunded_once = payment.status == "refunded" and payment.refunds == 1
        voided_uncaptured = payment.status == "voided" and _never_decided(payment)
        given_back = refunded_once or voided_uncaptured
        if order.status == "CANCELLED" and order.payment_verdict == "paid" and not given_back:
            refunds.fail(
                f"order {order.order_id} cancelled after payment, provider says"
                f" {payment.status} with {payment.refunds} refunds"
            )
        if order.status == "CANCELLED" and payment.status == "captured":
            captured_twice.fail(f"order {order.order_id} cancelled, its money still captured")
        if order.status == "CANCELLED" and payment.status == "open":
            captured_twice.fail(
                f"order {order.order_id} cancelled, its payment still open to be captured"
            )
        captured = payment.status == "captured" or (
            payment.status == "open" and _never_decided(payment)
        )
        if order.status == "DISPATCHED" and not (captured and order.payment_state == "captured"):
            captured_twice.fail(
                f"order {order.order_id} dispatched, payment {payment.status} at the provider,"
                f" {order.payment_state} at the store"
            )
    checks.extend([refunds, captured_twice])

    shipping = Check("each dispatched order has one live shipment; no cancelled order has one")
    for order in orders.values():
        shipment = shipments.get(f"order-{order.order_id}")
        if order.status == "DISPATCHED" and (shipment is None or shipment.status != "live"):
            shipping.fail(f"order {order.order_id} dispatched without a live shipment")
        if order.status == "CANCELLED" and shipment is not None and shipment.status == "live":
            shipping.fail(f"order {order.order_id} cancelled with a live shipment")
        if (
            order.status == "DISPATCHED"
            and shipment
            and shipment.tracking_number != order.tracking_number
        ):
            shipping.fail(
                f"order {order.order_id} tracks {order.tracking_number}, carrier says otherwise"
            )
    checks.append(shipping)

    log = Check("the event log agrees with the final state, every step logged once")
    for order in orders.values():
        types = [e.type for e in events[order.order_id]]
        repeated = [t for t, n in Counter(types).items() if n > 1 and t in STEP_EVENTS]
        if repeated:
            log.fail(f"order {order.order_id} logged {repeated} more than once")
        last = types[-1] if types else None
        if order.status == "DISPATCHED" and last != "checkout_complete":
            log.fail(f"order {order.order_id} dispatched, log ends with {last}")
        if order.status == "CANCELLED":
            if last != "checkout_failed":
                log.fail(f"order {order.order_id} cancelled, log ends with {last}")
            cancels = [e for e in events[order.order_id] if e.type == "CancelOrder"]
            if not cancels or cancels[0].detail != order.cancel_reason:
                log.fail(f"order {order.order_id}: cancel reason and log disagree")
            if order.payment_state == "refunded" and "RefundPayment" not in types:
                log.fail(f"order {order.order_id} refunded without RefundPayment in its log")
            if order.reservation == "released" and "ReleaseReservation" not in types:
                log.fail(f"order {order.order_id} released stock without logging it")
    checks.append(log)

    workflows = Check("no DBOS workflow in ERROR, none PENDING without a live reason")
    by_key = {order.checkout_key: order for order in orders.values()}
    # DBOS's tables are in the schema `dbos` on PostgreSQL, and unqualified on SQLite.
    table = "workflow_status" if conn.dialect.name == "sqlite" else "dbos.workflow_status"
    for workflow in _rows(conn, f"SELECT workflow_uuid, status, name FROM {table}"):
        if workflow.status in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
            workflows.fail(
                f"workflow {workflow.workflow_uuid} ({workflow.name}) is {workflow.status}"
            )
        if workflow.status in ("PENDING", "ENQUEUED") and not workflow.name.startswith("watchdog"):
            order = by_key.get(workflow.workflow_uuid)
            if order is None or order.order_id not in parked:
                workflows.fail(
                    f"workflow {workflow.workflow_uuid} ({workflow.name}) still {workflow.status}"
                )
    checks.append(workflows)
    return checks
