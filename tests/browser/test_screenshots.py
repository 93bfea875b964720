"""Screenshots of the store for the README, taken the way a shopper and an operator see it.

They go to docs/screenshots/ (committed, linked from the README) when
WIDGET_STORE_UPDATE_SCREENSHOTS is set, and to test-artifacts/ otherwise, so that an
ordinary test run never rewrites committed files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS
from tests.browser.shopping import ORDER_PAGE, buy, cart, order_id_of, product_card, restock
from tests.conftest import UPDATE_SCREENSHOTS_VARIABLE
from tests.server import ServerProcess
from widget_store.config import PROJECT_ROOT

SCREENSHOTS = ["catalog", "payment", "order-dispatched", "order-compensated", "ops-timeline"]


@pytest.fixture
def folder() -> Path:
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE):
        return PROJECT_ROOT / "docs" / "screenshots"
    return ARTIFACTS / "screenshots"


def test_screenshots_of_the_catalog_payment_orders_and_ops_timeline(
    page: Page, shop: ServerProcess, folder: Path
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    restock(shop, 100)
    page.goto(shop.base_url + "/")
    product_card(page, "Gear Widget").get_by_label("Quantity").fill("2")
    product_card(page, "Gear Widget").get_by_role("button", name="Add to cart").click()
    product_card(page, "Lamp Widget").get_by_role("button", name="Add to cart").click()
    expect(cart(page)).to_contain_text("$92.00")
    page.screenshot(path=folder / "catalog.png")

    buy(page)
    page.screenshot(path=folder / "payment.png")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Dispatched", exact=True)).to_be_visible()
    expect(page.get_by_text("All done")).to_be_visible()
    page.screenshot(path=folder / "order-dispatched.png", full_page=True)

    page.goto(shop.base_url + "/")
    buy(page, ("Spring Widget", 3), address="1 Invalid Street, Nowhere")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_text("Checkout undone")).to_be_visible()
    page.screenshot(path=folder / "order-compensated.png", full_page=True)

    compensated = order_id_of(page)
    page.goto(f"{shop.base_url}/ops#order-{compensated}")
    timeline = page.get_by_role("region", name=f"Saga timeline: order #{compensated}")
    expect(timeline.get_by_role("row").filter(has_text="Cancel the order")).to_be_visible()
    page.screenshot(path=folder / "ops-timeline.png", full_page=True)

    for name in SCREENSHOTS:
        assert (folder / f"{name}.png").stat().st_size > 10_000, name
