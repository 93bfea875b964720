"""The crash button: the server dies, the page says so, reconnects, and nothing is lost."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.browser.shopping import ORDER_PAGE, api_order, buy, restock
from tests.server import ServerProcess

RESTART_TIMEOUT_MS = 60_000


def test_crashing_the_server_while_an_order_waits_for_payment_loses_nothing(
    page: Page, shop: ServerProcess, console: Console
) -> None:
    console.expect("net::ERR_")  # a request the dying process may leave unanswered
    restock(shop, 100)
    page.goto(shop.base_url + "/")
    buy(page, ("Gear Widget", 1), ("Lamp Widget", 1))
    before = shop.worker_pid()

    page.get_by_role("button", name="Crash the server").click()

    banner = page.get_by_role("alert").filter(has_text="server")
    expect(banner).to_contain_text("The server is down")
    expect(banner).to_contain_text("The server is back", timeout=RESTART_TIMEOUT_MS)
    assert shop.worker_pid() != before
    expect(page.get_by_role("button", name="Crash the server")).to_be_enabled()

    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Dispatched", exact=True)).to_be_visible()
    events = [e["type"] for e in api_order(shop, page)["events"]]
    assert len(events) == len(set(events)), f"a step ran twice: {events}"


def test_the_order_page_shows_the_outage_and_follows_the_order_after_it(
    page: Page, shop: ServerProcess, console: Console
) -> None:
    console.expect("net::ERR_")
    restock(shop, 100)
    page.goto(shop.base_url + "/")
    buy(page, ("Spring Widget", 1))
    page.get_by_role("link", name="Back to the shop").click()  # the provider's way back
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Waiting for your payment")).to_be_visible()
    payment_url = api_order(shop, page)["payment_url"]

    page.get_by_role("button", name="Crash the server").click()
    banner = page.get_by_role("alert").filter(has_text="server")
    expect(banner).to_contain_text("The server is down")
    expect(banner).to_contain_text("The server is back", timeout=RESTART_TIMEOUT_MS)

    # Another tab pays; this one, still open through the outage, follows the order.
    assert shop.http.post(f"{payment_url}/pay").status_code == 303
    expect(page.get_by_role("heading", name="Dispatched", exact=True)).to_be_visible()
    expect(page.get_by_text("Tracking number:")).to_be_visible()
