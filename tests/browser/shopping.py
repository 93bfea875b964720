"""What a shopper does in the browser, in a few words each, for the browser tests."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from playwright.sync_api import Locator, Page

from tests.helpers import eventually
from tests.server import ServerProcess
from widget_store.config import DEMO_WEBHOOK_SECRET
from widget_store.payments import signed_webhook

ORDER_PAGE = re.compile(r"/order\.html\?order_id=\d+&token=[A-Za-z0-9_-]+$")
PAYMENT_PAGE = re.compile(r"/provider/pay/[A-Za-z0-9_-]+$")


def restock(shop: ServerProcess, inventory: int) -> None:
    """Give the test a clean shelf of `inventory` of each product.

    A restock counts the units held by live orders as on hand, so orders an earlier test
    left waiting for payment are declined first (by the provider's signed webhook, as a
    shopper walking away would end them) and the ones being dispatched are waited for.
    """
    settle_live_orders(shop)
    response = shop.http.post("/restock", json={"inventory": inventory})
    assert response.status_code == 200, response.text
    assert {p["available"] for p in response.json()["products"]} == {inventory}


def settle_live_orders(shop: ServerProcess) -> None:
    url = shop.setting("WIDGET_STORE_DATABASE_URL")
    assert url, "the shop runs on a database file the test knows"
    secret = shop.setting("WIDGET_STORE_WEBHOOK_SECRET") or DEMO_WEBHOOK_SECRET
    engine = sa.create_engine(url)
    live = (
        "SELECT payment_id, total_cents, payment_verdict FROM orders "
        "WHERE reservation = 'held' AND status NOT IN ('DISPATCHED', 'CANCELLED')"
    )
    try:
        with engine.connect() as conn:
            waiting = [
                row for row in conn.execute(sa.text(live)) if row.payment_verdict == "awaiting"
            ]
        for row in waiting:
            webhook = signed_webhook(secret, row.payment_id, "failed", row.total_cents)
            shop.http.post(webhook.path, content=webhook.body, headers=webhook.headers)

        def still_live() -> int:
            with engine.connect() as conn:
                return len(conn.execute(sa.text(live)).all())

        eventually(still_live, lambda count: count == 0, timeout=30, what="no live order")
    finally:
        engine.dispose()


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
