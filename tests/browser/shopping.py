"""What a shopper does in the browser, in a few words each, for the browser tests."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page

from tests.server import ServerProcess

ORDER_PAGE = re.compile(r"/order\.html\?order_id=\d+&token=[A-Za-z0-9_-]+$")
PAYMENT_PAGE = re.compile(r"/provider/pay/[A-Za-z0-9_-]+$")


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


def api_order(shop: ServerProcess, page: Page) -> dict[str, Any]:
    """The order the page shows, read over the API as its owner (with the page's token)."""
    token = re.search(r"token=([A-Za-z0-9_-]+)", page.url)
    assert token, page.url
    params = {"token": token.group(1)}
    result: dict[str, Any] = shop.http.get(f"/order/{order_id_of(page)}", params=params).json()
    return result
