"""Stuck sagas in the operations view: a parked refund is listed, and Retry finishes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import serve
from tests.helpers import eventually, new_key
from tests.server import ServerProcess


@pytest.fixture(scope="module")
def fragile_shop(
    chromium: Browser, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A store whose faults tests can arm, and which parks a compensation after 2 failures."""
    yield from serve(
        tmp_path_factory.mktemp("fragile"),
        sqlite_template,
        WIDGET_STORE_FAULT_INJECTION="1",
        WIDGET_STORE_COMPENSATION_ATTEMPTS="2",
    )


def test_a_parked_refund_is_listed_and_the_retry_button_finishes_it(
    page: Page, fragile_shop: ServerProcess
) -> None:
    shop = fragile_shop
    # The provider's refunds fail twice: enough to park the refund.
    shop.http.post("/_faults/fail-in/refund_payment", params={"times": 2}).raise_for_status()
    body = {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "1 invalid way"}
    placed: dict[str, Any] = shop.http.post(f"/checkout/{new_key()}", json=body).json()
    shop.http.post(f"{placed['payment_url']}/pay")
    order = f"Order #{placed['order_id']}"

    page.goto(shop.base_url + "/ops")
    stuck = page.get_by_role("region", name="Stuck sagas")
    row = stuck.get_by_role("row").filter(has_text=order)
    expect(row).to_contain_text("RefundPayment")
    expect(row).to_contain_text("injected failure in refund_payment")
    expect(row).to_contain_text("parked")

    row.get_by_role("button", name=f"Retry RefundPayment of order #{placed['order_id']}").click()

    expect(stuck.get_by_text("No parked compensation.")).to_be_visible()
    final = eventually(
        lambda: shop.http.get(f"/order/{placed['order_id']}").json(),
        until=lambda order: order["status"] == "CANCELLED",
    )
    assert "RefundPayment" in [event["type"] for event in final["events"]]


def test_the_watchdog_button_reports_what_it_checked(
    page: Page, fragile_shop: ServerProcess
) -> None:
    page.goto(fragile_shop.base_url + "/ops")
    page.get_by_role("button", name="Run the watchdog now").click()
    expect(page.get_by_text("unfinished order(s) checked")).to_be_visible()
