"""The operations view in Chromium: aggregates, the stage filter, and a saga's timeline."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.shopping import restock
from tests.helpers import new_key
from tests.server import ServerProcess


def checkout(shop: ServerProcess, decision: str | None) -> int:
    """Place an order over the API, and pay or decline it at the provider."""
    body = {"items": [{"product_id": 2, "quantity": 1}], "shipping_address": "1 Ops Lane"}
    placed: dict[str, Any] = shop.http.post(f"/checkout/{new_key()}", json=body).json()
    if decision is not None:
        shop.http.post(f"{placed['payment_url']}/{decision}")
    order_id: int = placed["order_id"]
    return order_id


def test_the_ops_view_filters_by_stage_and_shows_a_compensated_saga_step_by_step(
    page: Page, shop: ServerProcess
) -> None:
    restock(shop, 100)
    declined = checkout(shop, "decline")
    waiting = checkout(shop, None)
    page.goto(shop.base_url + "/ops")

    glance = page.get_by_role("region", name="At a glance")
    expect(glance).to_contain_text("Compensation ratio, last hour")
    expect(glance).to_contain_text("Oldest waiting for payment")
    expect(glance).to_contain_text("Events not yet published")
    expect(glance).to_contain_text("Dead letters open")
    expect(glance).to_contain_text("0 orphaned sagas")
    expect(glance.get_by_text(re.compile(r"\d+ waiting for payment"))).to_be_visible()

    page.get_by_label("Status").select_option(label="Compensated")
    orders = page.get_by_role("region", name="Recent orders").get_by_role("table")
    expect(orders.get_by_role("button", name=f"Order #{declined}", exact=True)).to_be_visible()
    expect(orders.get_by_role("button", name=f"Order #{waiting}", exact=True)).to_have_count(0)
    orders.get_by_role("button", name=f"Order #{declined}", exact=True).click()

    timeline = page.get_by_role("region", name=f"Saga timeline: order #{declined}")
    expect(timeline).to_contain_text("SUCCESS")  # the workflow ended well: it compensated
    steps = timeline.get_by_role("table")
    release = steps.get_by_role("row").filter(has_text="Release the reserved stock")
    expect(release).to_contain_text("compensation")
    expect(release).to_contain_text("ReleaseReservation")
    expect(steps.get_by_role("row").filter(has_text="verdict: declined")).to_contain_text(
        "ChargePayment_failed"
    )
    expect(steps.get_by_role("row").filter(has_text="Cancel the order")).to_contain_text(
        "payment declined"
    )
    expect(steps.get_by_role("row").nth(1)).to_contain_text("+0.000 s")  # after the header

    page.get_by_label("Status").select_option(label="Waiting for payment")
    expect(orders.get_by_role("button", name=f"Order #{declined}", exact=True)).to_have_count(0)
    orders.get_by_role("button", name=f"Order #{waiting}", exact=True).click()
    timeline = page.get_by_role("region", name=f"Saga timeline: order #{waiting}")
    expect(timeline).to_contain_text("PENDING")
    expect(timeline.get_by_role("row").last).to_contain_text("Waiting for the shopper's payment")


def test_the_ops_view_lists_trips_beside_orders_with_the_same_timeline(
    page: Page, shop: ServerProcess
) -> None:
    body = {
        "user_id": "traveller-9",
        "car_id": "compact-car",
        "hotel_id": "harbour-hotel",
        "flight_id": "invalid-flight",
        "attempts": 3,
    }
    trip = shop.http.post(f"/trips/{new_key()}", json=body).json()
    assert trip["status"] == "ROLLED_BACK"
    page.goto(shop.base_url + "/ops")

    trips = page.get_by_role("table", name="Recent trips")
    expect(trips).to_contain_text("traveller-9")
    trips.get_by_role("button", name=f"Trip #{trip['trip_id']}", exact=True).click()

    timeline = page.get_by_role("region", name=f"Saga timeline: trip #{trip['trip_id']}")
    expect(timeline).to_contain_text("SUCCESS")
    steps = timeline.get_by_role("table")
    hotel = steps.get_by_role("row").filter(has_text="Book the hotel")
    expect(hotel).to_contain_text("BookHotel_ok")
    expect(hotel.locator("td.retried")).to_have_text("2")  # down on the first try
    expect(steps.get_by_role("row").filter(has_text="Book the flight")).to_contain_text(
        "BookFlight_failed"
    )
    undo = steps.get_by_role("row").filter(has_text="Cancel the car, end the trip")
    expect(undo).to_contain_text("compensation")
    expect(undo).to_contain_text("trip_rolled_back")
