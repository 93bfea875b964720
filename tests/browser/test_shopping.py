"""A shopper in Chromium: buy, pay or decline, run out of stock, double-click, lose a reply."""

from __future__ import annotations

import re

from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Console
from tests.browser.shopping import (
    ORDER_PAGE,
    PAYMENT_PAGE,
    api_order,
    buy,
    cart,
    order_count,
    product_card,
    restock,
)
from tests.server import ServerProcess


def test_buying_two_products_and_paying_ends_dispatched_with_a_tracking_number(
    page: Page, shop: ServerProcess
) -> None:
    restock(shop, 100)
    page.goto(shop.base_url + "/")
    expect(product_card(page, "Gear Widget")).to_contain_text("$25.00")
    expect(product_card(page, "Gear Widget")).to_contain_text("100 in stock")

    buy(page, ("Gear Widget", 2), ("Spring Widget", 3), address="12 Test Road, Springfield")

    expect(page.get_by_role("heading", name="Pay $77.00")).to_be_visible()
    expect(page.get_by_text("Widget Store order #")).to_be_visible()
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Dispatched", exact=True)).to_be_visible()
    expect(page.get_by_text("Tracking number:")).to_contain_text(re.compile(r"WS[0-9A-F]{10}"))
    expect(page.get_by_label("Dispatch progress")).to_have_js_property("value", 100)
    items = page.get_by_role("table").filter(has_text="Each")
    expect(items).to_contain_text("Gear Widget")
    expect(items).to_contain_text("Spring Widget")
    expect(items).to_contain_text("$77.00")
    history = page.get_by_role("list").filter(has_text="Order placed")
    for step in ("Payment received", "Shipment booked with the carrier", "All done"):
        expect(history).to_contain_text(step)
    tracking = api_order(shop, page)["tracking_number"]
    expect(page.get_by_text("Tracking number:")).to_contain_text(tracking)


def test_a_declined_payment_says_so_and_the_stock_shown_goes_back_up(
    page: Page, shop: ServerProcess
) -> None:
    restock(shop, 100)
    catalog = page.context.new_page()  # a second tab keeps the catalog in view
    catalog.goto(shop.base_url + "/")
    expect(product_card(catalog, "Classic Widget")).to_contain_text("100 in stock")

    page.goto(shop.base_url + "/")
    buy(page, ("Classic Widget", 4))
    expect(product_card(catalog, "Classic Widget")).to_contain_text("96 in stock")
    page.get_by_role("button", name="Decline").click()

    page.wait_for_url(ORDER_PAGE)
    heading = page.get_by_role("heading", name="Cancelled: your payment was declined")
    expect(heading).to_be_visible()
    expect(page.get_by_text("You were not charged")).to_be_visible()
    expect(page.get_by_text("Widgets put back on the shelf")).to_be_visible()
    expect(page.get_by_role("link", name="Pay now")).to_be_hidden()
    expect(product_card(catalog, "Classic Widget")).to_contain_text("100 in stock")


def test_asking_for_more_than_the_shelf_holds_says_it_is_out_of_stock(
    page: Page, shop: ServerProcess, console: Console
) -> None:
    console.expect("status of 409")  # the checkout's answer to an order it cannot fill
    restock(shop, 5)
    page.goto(shop.base_url + "/")
    expect(product_card(page, "Lamp Widget")).to_contain_text("5 in stock")

    product_card(page, "Lamp Widget").get_by_label("Quantity").fill("6")
    product_card(page, "Lamp Widget").get_by_role("button", name="Add to cart").click()
    expect(cart(page)).to_contain_text("only 5 in stock")
    page.get_by_role("button", name="Buy now").click()

    explanation = page.get_by_role("alert").filter(has_text="enough stock")
    expect(explanation).to_contain_text("Lamp Widget: you asked for 6, only 5 left")
    expect(explanation).to_contain_text("nothing was charged")
    expect(page).to_have_url(shop.base_url + "/")
    expect(product_card(page, "Lamp Widget")).to_contain_text("5 in stock")
    expect(page.get_by_role("button", name="Buy now")).to_be_enabled()


def test_a_double_click_on_buy_now_places_one_order(page: Page, shop: ServerProcess) -> None:
    restock(shop, 100)
    before = order_count(shop)
    page.goto(shop.base_url + "/")
    product_card(page, "Spring Widget").get_by_role("button", name="Add to cart").click()

    page.get_by_role("button", name="Buy now").dblclick()

    page.wait_for_url(PAYMENT_PAGE)
    assert order_count(shop) == before + 1


def test_a_lost_reply_is_retried_with_the_same_key_and_places_one_order(
    page: Page, shop: ServerProcess, console: Console
) -> None:
    console.expect("net::ERR_CONNECTION_RESET")  # the reply this test throws away
    restock(shop, 100)
    before = order_count(shop)
    keys: list[str] = []

    def lose_the_first_reply(route: Route) -> None:
        keys.append(route.request.url.rsplit("/", 1)[1])
        if len(keys) == 1:
            route.fetch()  # the server places the order...
            route.abort("connectionreset")  # ...and the reply never arrives
        else:
            route.continue_()

    page.route("**/checkout/*", lose_the_first_reply)
    page.goto(shop.base_url + "/")
    buy(page, ("Gear Widget", 1))

    assert len(keys) == 2 and keys[0] == keys[1], keys
    assert order_count(shop) == before + 1


def test_a_shipping_failure_is_explained_and_the_payment_refunded(
    page: Page, shop: ServerProcess
) -> None:
    restock(shop, 100)
    page.goto(shop.base_url + "/")
    buy(page, ("Classic Widget", 1), address="1 Invalid Street, Nowhere")
    page.get_by_role("button", name="Pay", exact=True).click()

    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Cancelled: we couldn't ship it")).to_be_visible()
    expect(page.get_by_text("Your payment was refunded in full")).to_be_visible()
    expect(page.get_by_text("Payment refunded in full")).to_be_visible()  # in the history
    expect(page.get_by_label("Dispatch progress")).to_be_hidden()


def test_a_phone_sized_screen_needs_no_sideways_scrolling_and_works_by_keyboard(
    page: Page, shop: ServerProcess
) -> None:
    restock(shop, 100)
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(shop.base_url + "/")
    expect(product_card(page, "Spring Widget")).to_contain_text("in stock")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    quantity = product_card(page, "Spring Widget").get_by_label("Quantity")
    quantity.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    page.keyboard.press("Tab")
    expect(product_card(page, "Spring Widget").get_by_role("button")).to_be_focused()
    page.keyboard.press("Enter")
    expect(cart(page)).to_contain_text("$18.00")
    page.get_by_label("Shipping address").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Buy now")).to_be_focused()
    page.keyboard.press("Enter")

    page.wait_for_url(PAYMENT_PAGE)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.get_by_role("button", name="Pay", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Dispatched", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
