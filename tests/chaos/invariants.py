"""What must hold after any storm, read straight from the database once every order settled."""

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
    url: str, initial_stock: Mapping[int, int], restocked: Mapping[int, int]
) -> list[Check]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return _checks(conn, initial_stock, restocked)
    finally:
        engine.dispose()


def _checks(
    conn: sa.Connection, initial_stock: Mapping[int, int], restocked: Mapping[int, int]
) -> list[Check]:
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

    refunds = Check("every paid-then-cancelled order was refunded exactly once")
    captured_twice = Check("no payment was captured twice, and no money is stranded")
    for order in orders.values():
        payment = payments.get(order.payment_id)
        if payment is None:
            continue
        if payment.refunds > 1:
            refunds.fail(f"payment {payment.payment_id} refunded {payment.refunds} times")
        refunded_once = payment.status == "refunded" and payment.refunds == 1
        if order.status == "CANCELLED" and order.payment_verdict == "paid" and not refunded_once:
            refunds.fail(
                f"order {order.order_id} cancelled after payment, provider says"
                f" {payment.status} with {payment.refunds} refunds"
            )
        if order.status == "CANCELLED" and payment.status == "captured":
            captured_twice.fail(f"order {order.order_id} cancelled, its money still captured")
        if order.status == "DISPATCHED" and payment.status != "captured":
            captured_twice.fail(f"order {order.order_id} dispatched, payment {payment.status}")
        charged = [e for e in events[order.order_id] if e.type == "ChargePayment_ok"]
        if len(charged) > 1:
            captured_twice.fail(f"order {order.order_id} charged {len(charged)} times")
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
    for workflow in _rows(conn, "SELECT workflow_uuid, status, name FROM dbos.workflow_status"):
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
