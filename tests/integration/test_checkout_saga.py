"""The checkout saga end to end, on both backends: every path ends completed or compensated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from tests.helpers import Store, cart, eventually, new_key
from widget_store.config import Settings


def test_paid_checkout_is_dispatched_with_a_tracking_number(store: Store) -> None:
    before = store.stock()
    response = store.checkout(cart((1, 2), (2, 1)))
    assert response.status_code == 200, response.text
    placed = response.json()
    assert placed["status"] == "PENDING"
    assert placed["payment_url"].startswith("/provider/pay/")
    assert placed["payment_id"] not in placed["payment_url"], "the page link is not the ID"
    assert placed["order_url"] == (
        f"/order.html?order_id={placed['order_id']}&token={placed['order_token']}"
    )
    assert store.stock()[1] == before[1] - 2 and store.stock()[2] == before[2] - 1

    paid = store.choose(placed["payment_url"], "pay")
    assert paid.status_code == 303, paid.text

    order = store.wait_for(placed["order_id"], "DISPATCHED")
    assert order["tracking_number"]
    assert order["progress_remaining"] == 0
    assert order["total_cents"] == 2 * 1500 + 2500
    assert [(i["product_id"], i["quantity"], i["unit_price_cents"]) for i in order["items"]] == [
        (1, 2, 1500),
        (2, 1, 2500),
    ]
    assert store.event_types(placed["order_id"]) == [
        "CreateOrder_ok",
        "ReserveInventory_ok",
        "OpenPayment_ok",
        "ChargePayment_ok",
        "CreateShipment_ok",
        "Dispatch_started",
        "Dispatch_ok",
        "checkout_complete",
    ]
    assert store.stock()[1] == before[1] - 2


def test_declined_payment_releases_inventory_and_cancels(store: Store) -> None:
    before = store.stock()
    placed = store.checkout(cart((3, 4))).json()
    assert store.stock()[3] == before[3] - 4

    store.choose(placed["payment_url"], "decline")

    order = store.wait_for(placed["order_id"])
    assert order["status"] == "CANCELLED"
    assert order["cancel_reason"] == "payment declined"
    assert store.stock() == before
    events = [(e["type"], e["detail"]) for e in order["events"]]
    assert ("ChargePayment_failed", "payment declined") in events
    assert events[-4:] == [
        ("RefundPayment", "nothing was captured: the payment was declined"),
        ("ReleaseReservation", "4 x product 3 back on the shelf"),
        ("CancelOrder", "payment declined"),
        ("checkout_failed", "payment declined"),
    ]


def test_unpaid_checkout_times_out_and_is_compensated(settings: Settings) -> None:
    with Store.running(replace(settings, payment_timeout_s=1.0)) as store:
        before = store.stock()
        placed = store.checkout(cart((1, 1))).json()

        order = store.wait_for(placed["order_id"], timeout=15)

        assert order["status"] == "CANCELLED"
        assert order["cancel_reason"] == "payment timed out"
        assert store.stock() == before
        late = store.webhook(placed["payment_id"], "paid", order["total_cents"])
        assert late.status_code == 409
        assert late.json()["order"]["status"] == "CANCELLED"


def test_invalid_address_refunds_releases_and_cancels(store: Store) -> None:
    before = store.stock()
    placed = store.checkout(cart((2, 1), address="42 invalid road")).json()

    store.choose(placed["payment_url"], "pay")

    order = store.wait_for(placed["order_id"])
    assert order["status"] == "CANCELLED"
    assert order["cancel_reason"] == "shipping failed"
    assert store.stock() == before
    events = store.event_types(placed["order_id"])
    assert events[-7:] == [
        "ChargePayment_ok",
        "CreateShipment_failed",
        "CancelShipment",
        "RefundPayment",
        "ReleaseReservation",
        "CancelOrder",
        "checkout_failed",
    ]
    payment = store.rows(
        "SELECT status, refunds FROM provider_payments WHERE payment_id = :p",
        p=placed["payment_id"],
    )
    assert payment == [{"status": "refunded", "refunds": 1}]


def test_paid_by_a_direct_webhook_to_an_invalid_address_is_voided_and_cancelled(
    store: Store,
) -> None:
    """Issue 8's report, as a real provider (or `widget-store webhook`) would pay: a signed
    POST straight to the store, so the provider never captured anything to refund."""
    before = store.stock()
    placed = store.checkout(cart((1, 1), address="invalid street")).json()

    paid = store.webhook(
        placed["payment_id"], "paid", store.order(placed["order_id"])["total_cents"]
    )
    assert paid.status_code == 200, paid.text

    order = store.wait_for(placed["order_id"])
    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "shipping failed")
    assert store.stock() == before
    undone = {e["type"]: e["detail"] for e in order["events"]}
    assert undone["CancelShipment"] == "never booked: nothing to cancel"
    assert undone["RefundPayment"] == "nothing was captured: payment voided"
    status = store.scalar(
        "SELECT status FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
    )
    assert status == "voided"


def test_flaky_shipping_is_retried_until_dispatched(store: Store) -> None:
    placed = store.checkout(cart((1, 1), address="7 flaky lane")).json()

    store.choose(placed["payment_url"], "pay")

    order = store.wait_for(placed["order_id"])
    assert order["status"] == "DISPATCHED"
    assert order["tracking_number"]
    created = [e for e in order["events"] if e["type"] == "CreateShipment_ok"]
    assert created[0]["detail"] == f"{order['tracking_number']} (after 3 attempts)"
    shipments = store.rows("SELECT status FROM carrier_shipments")
    assert shipments == [{"status": "live"}]


def test_out_of_stock_is_refused_and_reserves_nothing(store: Store) -> None:
    before = store.stock()
    response = store.checkout(cart((1, 1), (4, before[4] + 1)))

    assert response.status_code == 409
    body = response.json()
    assert "out of stock" in body["detail"]
    assert body["short_items"] == [
        {"product_id": 4, "requested": before[4] + 1, "available": before[4]}
    ]
    assert store.stock() == before
    order = store.order(body["order_id"])
    assert order["status"] == "CANCELLED"
    assert order["cancel_reason"] == "out of stock"
    # Refused before any payment was opened: none to wait for, none at the provider.
    [row] = store.rows(
        "SELECT reservation, payment_verdict, payment_deadline FROM orders WHERE order_id = :o",
        o=body["order_id"],
    )
    assert row == {"reservation": "short", "payment_verdict": None, "payment_deadline": None}
    assert store.scalar("SELECT count(*) FROM provider_payments") == 0
    assert store.event_types(body["order_id"]) == [
        "CreateOrder_ok",
        "ReserveInventory_failed",
        "ReleaseReservation",  # nothing was held
        "CancelOrder",
        "checkout_failed",
    ]  # and no RefundPayment: there was nothing to give back


def test_twenty_shoppers_racing_for_five_units_exactly_five_win(store: Store) -> None:
    store.client.post("/restock", json={"inventory": 5})

    def buy(_: int) -> int:
        key = new_key()
        # As the store's page does: a busy store (503) is asked again, under the same key.
        response = eventually(
            lambda: store.checkout(cart((2, 1)), key=key),
            lambda response: response.status_code != 503,
            every=0.1,
            what="the store taking the checkout",
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(buy, range(20)))

    assert sorted(statuses) == [200] * 5 + [409] * 15
    assert store.stock()[2] == 0
    held = store.scalar("SELECT count(*) FROM orders WHERE reservation = 'held'")
    assert held == 5


@pytest.mark.parametrize("status", ["paid", "failed"])
def test_webhook_reply_names_the_order_and_the_verdict(store: Store, status: str) -> None:
    placed = store.checkout(cart((1, 1))).json()
    order = store.order(placed["order_id"])

    response = store.webhook(placed["payment_id"], status, order["total_cents"])

    assert response.status_code == 200
    assert response.json() == {"order_id": placed["order_id"], "status": status}


def test_same_key_twice_returns_the_same_order(store: Store) -> None:
    key = new_key()
    first = store.checkout(cart((1, 1)), key=key)
    second = store.checkout(cart((1, 1)), key=key)

    assert first.status_code == second.status_code == 200
    assert first.json()["order_id"] == second.json()["order_id"]
    assert store.scalar("SELECT count(*) FROM orders") == 1
