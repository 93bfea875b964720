"""What a shopper does in the browser, in a few words each, for the browser tests."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page

from tests.server import ServerProcess

ORDER_PAGE = re.compile(r"/order\.html\?order_id=\d+$")
PAYMENT_PAGE = re.compile(r"/provider/pay/pay_[0-9a-f]+$")


def restock(shop: ServerProcess, inventory: int) -> None:
    response = shop.http.post("/restock", json={"inventory": inventory})
    assert response.status_code == 200, response.text


def order_count(shop: ServerProcess) -> int:
    return len(shop.http.get("/orders?limit=200").json()["orders"])


def product_card(page: Page, name: str) -> Locator:
    return page.get_by_role("listitem").filter(has=page.get_by_role("heading", name=name))


def add_to_cart(page: Page, name: str, quantity: int = 1) -> None:
    card = product_card(page, name)
    card.get_by_label("Quantity").fill(str(quantity))
    card.get_by_role("button", name="Add to cart").click()


def cart(page: Page) -> Locator:
    return page.get_by_role("complementary", name="Your cart")


def buy(page: Page, *lines: tuple[str, int], address: str | None = None) -> None:
    """From the catalog: fill the cart, press Buy now, arrive on the payment page."""
    for name, quantity in lines:
        add_to_cart(page, name, quantity)
    if address is not None:
        page.get_by_label("Shipping address").fill(address)
    page.get_by_role("button", name="Buy now").click()
    page.wait_for_url(PAYMENT_PAGE)


def order_id_of(page: Page) -> int:
    match = re.search(r"order_id=(\d+)", page.url)
    assert match, page.url
    return int(match.group(1))


def api_order(shop: ServerProcess, order_id: int) -> dict[str, Any]:
    result: dict[str, Any] = shop.http.get(f"/order/{order_id}").json()
    return result
