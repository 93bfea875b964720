"""Who may read an order and who may pay for it: its owner, the operator, nobody else.

In production an order is read with the token its checkout answered with (or the admin
token); the payment ID never appears in a read; the simulated provider's pages exist only
on a staging store, and only the payment's own page link pays or declines it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.helpers import ADMIN_TOKEN, Store, cart, production_settings
from widget_store.config import Settings

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def place(store: Store) -> dict[str, Any]:
    response = store.checkout(cart((1, 1)))
    assert response.status_code == 200, response.text
    placed: dict[str, Any] = response.json()
    return placed


# --- reading an order in production -----------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=not-the-token", "?token=ünïcödé"],
    ids=["no-token", "empty-token", "wrong-token", "non-ascii-token"],
)
def test_in_production_an_order_cannot_be_read_without_its_token(
    production: Store, query: str
) -> None:
    placed = place(production)
    response = production.http.get(f"/order/{placed['order_id']}{query}")
    assert response.status_code == 401
    assert response.json() == {"detail": "this order can be read only with its token"}
    assert "shipping_address" not in response.text


def test_in_production_the_order_token_reads_the_order(production: Store) -> None:
    placed = place(production)
    response = production.http.get(f"/order/{placed['order_id']}?token={placed['order_token']}")
    assert response.status_code == 200
    assert response.json()["order_id"] == placed["order_id"]
    assert response.json()["payment_url"] == placed["payment_url"], "the owner may pay"
    assert placed["order_url"].endswith(f"token={placed['order_token']}")


def test_in_production_the_admin_token_reads_any_order(production: Store) -> None:
    placed = place(production)
    response = production.http.get(f"/order/{placed['order_id']}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["order_id"] == placed["order_id"]


def test_one_orders_token_does_not_read_another_order(production: Store) -> None:
    mine, theirs = place(production), place(production)
    response = production.http.get(f"/order/{theirs['order_id']}?token={mine['order_token']}")
    assert response.status_code == 401


def test_order_tokens_are_long_random_and_never_the_order_id(production: Store) -> None:
    tokens = [place(production)["order_token"] for _ in range(3)]
    assert len(set(tokens)) == 3
    assert all(len(token) >= 32 for token in tokens)


def test_in_production_the_long_poll_needs_the_token_too_and_refuses_at_once(
    production: Store,
) -> None:
    placed = place(production)
    url = f"/order/{placed['order_id']}?after_events=100&wait_s=0.5"

    refused = production.http.get(url)
    refused_wrong = production.http.get(f"{url}&token=not-the-token")
    allowed = production.http.get(f"{url}&token={placed['order_token']}")

    assert refused.status_code == refused_wrong.status_code == 401
    assert allowed.status_code == 200
    assert allowed.json()["order_id"] == placed["order_id"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token-wrong"}, {"Authorization": "Bearer"}],
    ids=["none", "wrong", "empty"],
)
def test_in_production_listing_orders_needs_the_admin_token(
    production: Store, headers: dict[str, str]
) -> None:
    place(production)
    response = production.http.get("/orders", headers=headers)
    assert response.status_code == 401
    assert "orders" not in response.json()


def test_in_production_the_admin_lists_orders(production: Store) -> None:
    placed = place(production)
    response = production.http.get("/orders", headers=ADMIN)
    assert response.status_code == 200
    assert [o["order_id"] for o in response.json()["orders"]] == [placed["order_id"]]


def test_the_demo_leaves_reads_open_but_shows_the_payment_page_only_to_the_owner(
    store: Store,
) -> None:
    placed = place(store)
    stranger = store.http.get(f"/order/{placed['order_id']}")
    owner = store.http.get(f"/order/{placed['order_id']}?token={placed['order_token']}")
    assert stranger.status_code == owner.status_code == 200
    assert stranger.json()["payment_url"] is None
    assert owner.json()["payment_url"] == placed["payment_url"]
    assert store.http.get("/orders").status_code == 200


@pytest.mark.parametrize("mode", ["demo", "production"])
def test_no_order_read_shows_the_payment_id(settings: Settings, mode: str) -> None:
    running = production_settings(settings) if mode == "production" else settings
    with Store.running(running) as store:
        placed = place(store)
        reads = [
            store.http.get(f"/order/{placed['order_id']}?token={placed['order_token']}"),
            store.http.get(f"/order/{placed['order_id']}", headers=ADMIN),
            store.http.get("/orders", headers=ADMIN),
        ]
        for read in reads:
            assert read.status_code == 200
            assert placed["payment_id"] not in read.text
            assert "payment_id" not in read.text


# --- the simulated provider's pages -------------------------------------------------------


def test_in_production_the_simulated_provider_is_not_mounted(production: Store) -> None:
    placed = place(production)
    page = production.http.get(placed["payment_url"])
    pay = production.choose(placed["payment_url"], "pay")
    assert page.status_code == 404
    assert pay.status_code in (404, 405)
    assert production.order_as_admin(placed["order_id"])["status"] == "PENDING"


def test_a_staging_store_mounts_the_simulated_provider_and_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    staging = replace(production_settings(settings), staging=True)
    with caplog.at_level("WARNING", logger="widget_store.app"), Store.running(staging) as store:
        placed = place(store)
        assert store.http.get(placed["payment_url"]).status_code == 200
        assert store.choose(placed["payment_url"], "pay").status_code == 303
        order = store.order_as_admin(placed["order_id"])
        assert order["payment_verdict"] == "paid"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("WIDGET_STORE_STAGING=1" in message for message in warnings)


@pytest.mark.parametrize("decision", ["pay", "decline"])
def test_the_payment_id_is_not_the_payment_page(store: Store, decision: str) -> None:
    placed = place(store)
    by_payment_id = f"/provider/pay/{placed['payment_id']}"

    page = store.http.get(by_payment_id)
    choice = store.choose(by_payment_id, decision)

    assert page.status_code == 404
    assert choice.status_code == 404
    assert "does not exist" in choice.text
    order = store.order(placed["order_id"])
    assert (order["status"], order["payment_verdict"]) == ("PENDING", "awaiting")
    provider = store.scalar(
        "SELECT status FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
    )
    assert provider == "open"


def test_the_payment_page_link_is_not_the_payment_id(store: Store) -> None:
    placed = place(store)
    assert placed["payment_id"] not in placed["payment_url"]


# --- the API's own documentation ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_in_production_the_api_documentation_is_not_public(production: Store, path: str) -> None:
    assert production.http.get(path).status_code == 404
    assert production.http.get(path, headers=ADMIN).status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_the_documentation_is_public_in_the_demo_and_where_a_setting_says_so(
    settings: Settings, path: str
) -> None:
    public = replace(production_settings(settings), public_docs=True)
    for running in (settings, public):
        with Store.running(running) as store:
            assert store.http.get(path).status_code == 200
