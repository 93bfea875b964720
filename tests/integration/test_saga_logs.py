"""A saga's log records name the checkout they are about, through the log context the
workflow inherits from the route that started it."""

from __future__ import annotations

from tests.helpers import Store, cart, eventually, new_key
from tests.integration.test_ops import RefundsFailThreeTimes
from tests.unit.test_logs import entries, json_lines
from widget_store.config import Settings


def test_a_saga_warning_names_its_checkout(settings: Settings) -> None:
    key = new_key()
    with (
        Store.running(settings, payments=lambda _simulated: RefundsFailThreeTimes()) as store,
        json_lines("dbos") as stream,
    ):
        placed = store.checkout(cart((1, 1), address="1 invalid road"), key=key).json()
        total = store.order(placed["order_id"])["total_cents"]
        assert store.webhook(placed["payment_id"], "paid", total).status_code == 200
        eventually(
            lambda: "RefundPayment failed" in stream.getvalue(),
            what=lambda: f"the failed refund logged:\n{stream.getvalue()}",
        )
    warning = next(e for e in entries(stream) if "RefundPayment failed" in e["message"])
    assert warning["checkout_key"] == key, "the workflow inherits the route's log context"
    assert warning["workflow_id"] == key
