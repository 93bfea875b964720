"""Production mode in Chromium: no page offers the crash button; /ops asks for the token."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN_TOKEN, Console
from tests.browser.shopping import ORDER_PAGE, buy
from tests.server import ServerProcess


def page_config(page: Page) -> Any:
    """The config the page's own scripts acted on (the same module, so the same promise)."""
    return page.evaluate("async () => (await import('/static/site.js')).config")


def assert_no_crash_button(page: Page) -> None:
    assert page_config(page)["demo"] is False
    expect(page.get_by_role("button", name="Crash the server")).to_have_count(0)
    assert "Crash the server" not in page.content()


def test_no_production_page_offers_the_crash_button(
    page: Page, production_shop: ServerProcess
) -> None:
    page.goto(production_shop.base_url + "/")
    expect(page.get_by_role("heading", name="Classic Widget")).to_be_visible()
    assert_no_crash_button(page)

    buy(page, ("Classic Widget", 1))
    assert_no_crash_button(page)  # the payment page

    page.get_by_role("link", name="Back to the shop").click()
    page.wait_for_url(ORDER_PAGE)
    expect(page.get_by_role("heading", name="Order #")).to_be_visible()
    assert_no_crash_button(page)

    page.goto(production_shop.base_url + "/ops")
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert_no_crash_button(page)


def test_an_unpaid_order_is_cancelled_at_its_deadline_in_plain_words(
    page: Page, production_shop: ServerProcess
) -> None:
    page.goto(production_shop.base_url + "/")
    buy(page, ("Spring Widget", 2))
    page.get_by_role("link", name="Back to the shop").click()
    page.wait_for_url(ORDER_PAGE)

    expect(page.get_by_role("heading", name="Cancelled: no payment in time")).to_be_visible()
    expect(page.get_by_text("didn't receive your payment before the deadline")).to_be_visible()
    expect(page.get_by_role("link", name="Pay now")).to_be_hidden()


def sign_in_with_a_wrong_token_first(page: Page) -> None:
    """Type a wrong admin token (refused, and said so), then the right one."""
    page.get_by_label("Admin token").fill("not-the-admin-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="token")).to_have_text(
        "That token was not accepted."
    )
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()


def test_the_ops_view_asks_for_the_admin_token_and_keeps_it_for_the_tab(
    page: Page, production_shop: ServerProcess, console: Console
) -> None:
    console.expect("status of 401")  # the wrong token, refused
    page.goto(production_shop.base_url + "/ops")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("region", name="At a glance")).to_be_hidden()

    sign_in_with_a_wrong_token_first(page)
    expect(page.get_by_role("region", name="At a glance")).to_contain_text("Dispatched")
    expect(page.get_by_role("heading", name="Sign in")).to_be_hidden()

    page.reload()
    expect(page.get_by_role("region", name="At a glance")).to_contain_text("Dispatched")
    expect(page.get_by_role("heading", name="Sign in")).to_be_hidden()


def test_a_wrong_tokens_late_refusal_does_not_sign_the_right_token_out(
    page: Page, production_shop: ServerProcess, console: Console
) -> None:
    """The wrong token's four requests go out at once; the first 401 shows the form, and
    the others may still be answered after the right token was typed."""
    console.expect("status of 401")
    held: list[Any] = []

    def hold_the_wrong_tokens_trip_list(route: Any) -> None:
        if route.request.headers.get("authorization") == f"Bearer {ADMIN_TOKEN}":
            route.continue_()
        else:
            held.append(route)  # answered below, once the right token is in

    page.route("**/ops/trips*", hold_the_wrong_tokens_trip_list)
    page.goto(production_shop.base_url + "/ops")
    sign_in_with_a_wrong_token_first(page)
    expect(page.get_by_role("region", name="At a glance")).to_be_visible()
    assert held, "the wrong token's trip list was held back"
    for route in held:
        route.fulfill(status=401, json={"detail": "invalid or missing admin token"})
    page.wait_for_timeout(200)

    page.reload()
    expect(page.get_by_role("region", name="At a glance")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in")).to_be_hidden()
