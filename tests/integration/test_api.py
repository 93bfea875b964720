"""The HTTP API's contract: shapes, defaults, and a clear 4xx for every kind of bad input."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import Store, cart, new_key


def test_products_have_the_documented_shape(store: Store) -> None:
    products = store.http.get("/products").json()
    assert len(products) >= 3
    assert set(products[0]) == {
        "product_id",
        "sku",
        "name",
        "description",
        "price_cents",
        "inventory",
    }
    assert store.http.get("/product").json() == products[0]
    assert store.http.get(f"/products/{products[1]['product_id']}").json() == products[1]


def test_an_unknown_product_is_404(store: Store) -> None:
    response = store.http.get("/products/999")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown product 999"}


def test_no_body_buys_one_unit_of_the_first_product(store: Store) -> None:
    first = store.http.get("/product").json()
    response = store.checkout(None)
    assert response.status_code == 200, response.text
    order = store.order(response.json()["order_id"])
    assert order["items"] == [
        {"product_id": first["product_id"], "quantity": 1, "unit_price_cents": first["price_cents"]}
    ]


def test_the_same_key_with_a_different_body_is_409(store: Store) -> None:
    key = new_key()
    assert store.checkout(cart((1, 1)), key=key).status_code == 200
    response = store.checkout(cart((1, 2)), key=key)
    assert response.status_code == 409
    assert "different checkout request" in response.json()["detail"]
    assert store.scalar("SELECT count(*) FROM orders") == 1


def test_the_same_key_with_the_lines_reordered_is_the_same_request(store: Store) -> None:
    key = new_key()
    first = store.checkout(cart((1, 1), (2, 1)), key=key)
    second = store.checkout(cart((2, 1), (1, 1)), key=key)
    assert second.status_code == 200
    assert first.json() == second.json()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"items": []}, "at least 1"),
        ({"items": [{"product_id": 1, "quantity": 0}]}, "greater than or equal to 1"),
        ({"items": [{"product_id": 1, "quantity": -3}]}, "greater than or equal to 1"),
        ({"items": [{"product_id": 1, "quantity": 101}]}, "less than or equal to 100"),
        ({"items": [{"product_id": 1, "quantity": "2"}]}, "valid integer"),
        ({"items": [{"product_id": 1, "quantity": 1.5}]}, "valid integer"),
        ({"items": [{"product_id": i, "quantity": 1} for i in range(1, 52)]}, "at most 50"),
        (
            {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "x" * 501},
            "at most 500",
        ),
        ({"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "   "}, "empty"),
        ({"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a\x00b"}, "control"),
        ({"items": [{"product_id": 1, "quantity": 1}], "coupon": "FREE"}, "Extra inputs"),
        ({"items": "lots"}, "valid list"),
    ],
)
def test_bad_carts_are_422_with_a_message_and_create_nothing(
    store: Store, body: dict[str, Any], fragment: str
) -> None:
    response = store.checkout(body)
    assert response.status_code == 422, response.text
    assert fragment in response.text
    assert store.scalar("SELECT count(*) FROM orders") == 0


def test_an_unknown_product_in_the_cart_is_422(store: Store) -> None:
    response = store.checkout(cart((1, 1), (999, 1)))
    assert response.status_code == 422
    assert response.json()["detail"] == "unknown product: 999"
    assert store.scalar("SELECT count(*) FROM orders") == 0


def test_the_checkout_reads_the_catalog_only_for_products_it_has_not_found_before(
    store: Store,
) -> None:
    price_reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "price_cents" in statement and "FROM products" in statement:
            price_reads.append(statement)

    engine = store.client.app.state.engine.sync_engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "before_cursor_execute", count)

    def reads_for(*lines: tuple[int, int]) -> tuple[int, int]:
        price_reads.clear()
        response = store.checkout(cart(*lines))
        return response.status_code, len(price_reads)

    assert reads_for((1, 1)) == (200, 2)  # the route's check, then place_order's prices
    assert reads_for((1, 1)) == (200, 1)  # found before: place_order's prices only
    assert reads_for((1, 1), (999, 1)) == (422, 1)  # an unknown product is read each time
    assert reads_for((999, 1)) == (422, 1)
    store.execute(
        "INSERT INTO products (product_id, sku, name, description, price_cents, inventory)"
        " VALUES (1000, 'NEW-1', 'New', 'added while the store runs', 500, 5)"
    )
    assert reads_for((1000, 1)) == (200, 2)  # added since: found at once


def test_duplicate_product_lines_are_422(store: Store) -> None:
    response = store.checkout(cart((1, 1), (1, 2)))
    assert response.status_code == 422
    assert "more than one line" in response.json()["detail"]


def test_malformed_json_is_422(store: Store) -> None:
    response = store.http.post(
        f"/checkout/{new_key()}", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.text


@pytest.mark.parametrize("key", ["x" * 129, "has space", "semi;colon", "ümlaut"])
def test_a_bad_idempotency_key_is_422(store: Store, key: str) -> None:
    response = store.http.post(f"/checkout/{key}", json=cart((1, 1)))
    assert response.status_code == 422


def test_unicode_addresses_are_kept_as_written(store: Store) -> None:
    address = "Königstraße 7, 東京都 🏠"
    order_id = store.checkout(cart((1, 1), address=address)).json()["order_id"]
    assert store.order(order_id)["shipping_address"] == address


def test_an_unknown_order_is_404(store: Store) -> None:
    response = store.http.get("/order/424242")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown order 424242"}
    assert store.http.get("/order/abc").status_code == 422


def test_orders_are_listed_newest_first_in_pages(store: Store) -> None:
    ids = [store.checkout(cart((3, 1))).json()["order_id"] for _ in range(5)]
    first = store.http.get("/orders", params={"limit": 2}).json()
    assert [o["order_id"] for o in first["orders"]] == [ids[4], ids[3]]
    second = store.http.get("/orders", params={"limit": 2, "before": first["next_before"]}).json()
    assert [o["order_id"] for o in second["orders"]] == [ids[2], ids[1]]
    last = store.http.get("/orders", params={"limit": 2, "before": second["next_before"]}).json()
    assert [o["order_id"] for o in last["orders"]] == [ids[0]]
    assert last["next_before"] is None
    assert store.http.get("/orders", params={"limit": 0}).status_code == 422


def test_restock_sets_every_products_stock(store: Store) -> None:
    answer = store.http.post("/restock", json={"inventory": 7}).json()
    assert answer["inventory"] == 7
    assert {p["product_id"]: p["available"] for p in answer["products"]} == store.stock()
    assert set(store.stock().values()) == {7}
    assert store.http.post("/restock").json()["inventory"] == 100
    assert set(store.stock().values()) == {100}
    assert store.http.post("/restock", json={"inventory": -1}).status_code == 422


def test_the_openapi_page_documents_the_api(store: Store) -> None:
    schema = store.http.get("/openapi.json").json()
    assert {
        "/checkout/{idempotency_key}",
        "/order/{order_id}",
        "/payment_webhook/{payment_id}/{payment_status}",
    } <= set(schema["paths"])
    assert store.http.get("/docs").status_code == 200


def test_a_long_poll_answers_as_soon_as_the_order_has_news(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    placed = store.checkout(cart((1, 1))).json()
    seen = len(store.order(placed["order_id"])["events"])
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(
            store.http.get,
            f"/order/{placed['order_id']}",
            params={"after_events": seen, "wait_s": 20},
        )
        assert not waiting.done()
        store.choose(placed["payment_url"], "pay")
        news = waiting.result(timeout=20).json()
    assert len(news["events"]) > seen
    assert news["events"][seen]["type"] == "ChargePayment_ok"


def test_a_long_poll_without_news_answers_when_its_wait_is_over(store: Store) -> None:
    placed = store.checkout(cart((1, 1))).json()
    seen = len(store.order(placed["order_id"])["events"])
    response = store.http.get(
        f"/order/{placed['order_id']}", params={"after_events": seen, "wait_s": 0.3}
    )
    assert response.status_code == 200
    assert len(response.json()["events"]) == seen
    assert store.http.get("/order/1", params={"wait_s": 31}).status_code == 422


def test_a_long_poll_on_the_status_answers_once_the_order_leaves_it(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    placed = store.checkout(cart((1, 1))).json()
    assert placed["status"] == "PENDING"
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(
            store.http.get,
            f"/order/{placed['order_id']}",
            params={"after_status": "PENDING", "wait_s": 20},
        )
        time.sleep(0.3)
        assert not waiting.done(), "a pending order is no news to a wait on PENDING"
        store.choose(placed["payment_url"], "pay")
        news = waiting.result(timeout=20)
    assert news.status_code == 200
    assert news.json()["status"] in ("PAID", "DISPATCHED")


def test_a_long_poll_on_a_status_the_order_has_left_answers_at_once(store: Store) -> None:
    placed = store.checkout(cart((1, 1))).json()
    started = time.monotonic()
    response = store.http.get(
        f"/order/{placed['order_id']}", params={"after_status": "PAID", "wait_s": 20}
    )
    assert response.status_code == 200 and response.json()["status"] == "PENDING"
    assert time.monotonic() - started < 10, "answered without waiting out wait_s"


def test_a_long_poll_on_an_unknown_status_is_refused_with_a_message(store: Store) -> None:
    response = store.http.get("/order/1", params={"after_status": "LOST"})
    assert response.status_code == 422
    assert "after_status" in response.text


@pytest.mark.parametrize(
    ("decision", "status", "reason"),
    [("decline", "CANCELLED", "payment declined"), ("pay", "DISPATCHED", None)],
)
def test_a_checkout_retried_after_its_order_ended_answers_the_orders_state_now(
    store: Store, decision: str, status: str, reason: str | None
) -> None:
    key = new_key()
    first = store.checkout(cart((1, 1)), key=key).json()
    assert first["status"] == "PENDING" and first["payment_url"]
    store.choose(first["payment_url"], decision)
    assert store.wait_for(first["order_id"])["status"] == status

    retried = store.checkout(cart((1, 1)), key=key)

    assert retried.status_code == 200
    answer = retried.json()
    assert answer["order_id"] == first["order_id"]
    assert answer["status"] == status
    assert answer["payment_url"] is None, "nothing left to pay"
    assert answer["order_token"] == first["order_token"]
    assert store.order(first["order_id"])["cancel_reason"] == reason
