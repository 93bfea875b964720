"""The operations view's data, over HTTP, on both backends: aggregates, stages, timelines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import ADMIN_TOKEN, Store, cart
from widget_store.config import Settings
from widget_store.payments import (
    PaymentGivenBack,
    PaymentProviderUnavailable,
    PaymentRequest,
    ProviderState,
)


def placed_and_decided(store: Store, decision: str | None, address: str = "1 Main St") -> int:
    placed = store.checkout(cart((1, 1), address=address)).json()
    if decision is not None:
        assert store.choose(placed["payment_url"], decision).status_code == 303
        store.wait_for(placed["order_id"])
    order_id: int = placed["order_id"]
    return order_id


def timeline(store: Store, order_id: int) -> dict[str, Any]:
    response = store.http.get(f"/ops/orders/{order_id}/timeline")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def rows_by_name(timeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in timeline["rows"]}


def test_the_summary_counts_orders_by_status_and_names_the_oldest_unpaid_one(
    store: Store,
) -> None:
    oldest = placed_and_decided(store, None)
    placed_and_decided(store, None)
    placed_and_decided(store, "pay")
    placed_and_decided(store, "decline")
    store.checkout(cart((4, 11)))  # out of stock: cancelled at once

    summary = store.http.get("/ops/summary").json()

    assert summary["counts"] == {"PENDING": 2, "PAID": 0, "DISPATCHED": 1, "CANCELLED": 2}
    assert summary["waiting_for_payment"] == 2
    assert summary["last_hour"] == {"finished": 3, "compensated": 2, "compensation_ratio": 0.667}
    assert summary["oldest_waiting"]["order_id"] == oldest
    assert summary["oldest_waiting"]["age_s"] >= 0


def test_an_empty_store_has_no_ratio_and_no_oldest_unpaid_order(store: Store) -> None:
    summary = store.http.get("/ops/summary").json()
    assert summary["last_hour"]["compensation_ratio"] is None
    assert summary["oldest_waiting"] is None


def test_the_order_list_filters_by_stage(store: Store) -> None:
    ids = {
        "declined": placed_and_decided(store, "decline"),
        "dispatched": placed_and_decided(store, "pay"),
        "waiting": placed_and_decided(store, None),
    }
    expected = {
        "": ["waiting", "dispatched", "declined"],
        "?stage=waiting_for_payment": ["waiting"],
        "?stage=pending": ["waiting"],
        "?stage=dispatched": ["dispatched"],
        "?stage=compensated": ["declined"],
        "?stage=paid": [],
    }

    for query, names in expected.items():
        orders = store.http.get(f"/ops/orders{query}").json()["orders"]
        assert [o["order_id"] for o in orders] == [ids[name] for name in names], query

    stages = {o["order_id"]: o["stage"] for o in store.http.get("/ops/orders").json()["orders"]}
    assert stages == {
        ids["waiting"]: "waiting_for_payment",
        ids["dispatched"]: "dispatched",
        ids["declined"]: "compensated",
    }


def test_the_order_list_pages_and_refuses_an_unknown_stage(store: Store) -> None:
    ids = [placed_and_decided(store, None) for _ in range(3)]
    first = store.http.get("/ops/orders?limit=2").json()
    second = store.http.get(f"/ops/orders?limit=2&before={first['next_before']}").json()
    assert [o["order_id"] for o in first["orders"] + second["orders"]] == ids[::-1]
    assert second["next_before"] is None
    assert store.http.get("/ops/orders?stage=lost").status_code == 422


def test_a_dispatched_orders_timeline_shows_each_step_with_what_it_logged(store: Store) -> None:
    order_id = placed_and_decided(store, "pay")

    result = timeline(store, order_id)

    assert result["workflow"]["status"] == "SUCCESS"
    assert result["workflow"]["output"] == "DISPATCHED"
    assert result["order_status"] == "DISPATCHED"
    assert result["compensations"] == 0
    names = [row["name"] for row in result["rows"]]
    assert names[0] == "place_order"
    later = ["DBOS.recv", "ship_order", "complete_dispatch"]
    assert [n for n in names if n in later] == later
    rows = rows_by_name(result)
    assert [e["type"] for e in rows["ship_order"]["events"]] == [
        "CreateShipment_ok",
        "Dispatch_started",
    ]
    # The webhook charged the order, no step of the saga: its entry stands on its own.
    assert rows["ChargePayment_ok"]["kind"] == "event"
    assert [e["type"] for e in rows["complete_dispatch"]["events"]] == [
        "Dispatch_ok",
        "checkout_complete",
    ]
    assert rows["DBOS.recv"]["output"] == "paid"
    assert rows["ship_order"]["attempts"] == 1
    assert rows["place_order"]["start_ms"] == 0
    assert [e["type"] for e in rows["place_order"]["events"]] == [
        "CreateOrder_ok",
        "ReserveInventory_ok",
        "OpenPayment_ok",
    ]
    starts = [row["start_ms"] for row in result["rows"]]
    assert all(start >= 0 for start in starts)
    assert all(row["status"] == "ok" and row["error"] is None for row in result["rows"])


def test_a_declined_orders_timeline_shows_its_compensations(store: Store) -> None:
    order_id = placed_and_decided(store, "decline")

    result = timeline(store, order_id)

    rows = rows_by_name(result)
    assert rows["DBOS.recv"]["output"] == "failed"
    assert rows["ChargePayment_failed"]["kind"] == "event"
    undone = [row["name"] for row in result["rows"] if row["kind"] == "compensation"]
    assert undone == ["refund_payment", "release_inventory", "cancel_order"]
    assert result["compensations"] == 3
    assert [e["detail"] for e in rows["refund_payment"]["events"]] == [
        "nothing was captured: the payment was declined"
    ]
    assert [e["type"] for e in rows["release_inventory"]["events"]] == ["ReleaseReservation"]
    assert result["cancel_reason"] == "payment declined"
    assert result["stage"] == "compensated"


def test_a_carrier_retry_is_counted_in_the_shipments_attempts(store: Store) -> None:
    order_id = placed_and_decided(store, "pay", address="9 flaky road")
    assert rows_by_name(timeline(store, order_id))["ship_order"]["attempts"] == 3


class RefundsFailThreeTimes:
    """A payment provider whose refunds fail until the fourth call."""

    def __init__(self) -> None:
        self.refund_calls = 0

    async def create_payment(self, request: PaymentRequest) -> str:
        return f"/provider/pay/page-of-{request.order_id}"

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        self.refund_calls += 1
        if self.refund_calls <= 3:
            raise PaymentProviderUnavailable("the provider is busy")
        return PaymentGivenBack(ProviderState.CAPTURED, ProviderState.REFUNDED, "re_1")


def test_a_retried_compensation_is_one_row_with_every_attempt_and_its_error(
    settings: Settings,
) -> None:
    with Store.running(settings, payments=lambda _simulated: RefundsFailThreeTimes()) as store:
        placed = store.checkout(cart((1, 1), address="1 invalid road")).json()
        total = store.order(placed["order_id"])["total_cents"]
        assert store.webhook(placed["payment_id"], "paid", total).status_code == 200
        order = store.wait_for(placed["order_id"], timeout=30)
        assert order["cancel_reason"] == "shipping failed"

        result = timeline(store, placed["order_id"])

    rows = rows_by_name(result)
    assert [e["detail"] for e in rows["ship_order"]["events"]] == [
        "the carrier cannot deliver to this address"
    ]
    refund = rows["refund_payment"]
    # Three failed calls, each retried by the saga after a durable backoff, then success.
    assert refund["attempts"] == 4
    assert refund["failures"] == ["PaymentProviderUnavailable: the provider is busy"] * 3
    assert refund["status"] == "ok" and refund["error"] is None
    assert [e["detail"] for e in refund["events"]] == ["refunded 1500 cents (re_1)"]
    assert sum(1 for row in result["rows"] if row["name"] == "refund_payment") == 1
    assert "Traceback" not in str(result)


def test_a_waiting_orders_timeline_ends_with_the_wait_in_progress(store: Store) -> None:
    order_id = placed_and_decided(store, None)

    result = timeline(store, order_id)

    assert result["workflow"]["status"] == "PENDING"
    last = result["rows"][-1]
    assert last["status"] == "running"
    assert last["label"] == "Waiting for the shopper's payment"
    assert result["stage"] == "waiting_for_payment"


def test_an_unknown_orders_timeline_is_404(store: Store) -> None:
    assert store.http.get("/ops/orders/999/timeline").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/ops/summary", "/ops/orders", "/ops/orders?stage=compensated", "/ops/orders/1/timeline"],
)
def test_the_ops_data_needs_the_admin_token_in_production(production: Store, path: str) -> None:
    production.checkout(cart((1, 1)))
    assert production.http.get(path).status_code == 401
    wrong = {"Authorization": "Bearer wrong-token-wrong-token"}
    assert production.http.get(path, headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert production.http.get(path, headers=right).status_code == 200


def test_config_tells_the_demo_pages_to_offer_the_crash_button(store: Store) -> None:
    config = store.http.get("/config").json()
    assert config == {"demo": True, "admin_token_required": False, "dispatch_s": 0.2}


def test_config_tells_the_production_pages_to_ask_for_the_admin_token(
    production: Store,
) -> None:
    config = production.http.get("/config").json()
    assert config["demo"] is False and config["admin_token_required"] is True


def test_the_ops_page_is_public_and_under_the_content_security_policy(production: Store) -> None:
    response = production.http.get("/ops")
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
