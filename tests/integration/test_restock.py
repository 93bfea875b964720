"""A restock says what is on hand; units held by live orders are part of it, not extra.

So once every live order is released the shelf holds exactly what was asked, and a
restock racing checkouts on PostgreSQL queues behind them instead of deadlocking.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import replace

from tests.helpers import Store, cart
from widget_store.config import Settings


def shelf_of(answer: dict[str, object], product_id: int) -> dict[str, int]:
    products = answer["products"]
    assert isinstance(products, list)
    found: dict[str, int] = next(p for p in products if p["product_id"] == product_id)
    return found


def test_units_held_by_live_orders_count_towards_the_stock_on_hand(settings: Settings) -> None:
    with Store.running(replace(settings, dispatch_s=0)) as store:
        store.http.post("/restock", json={"inventory": 100})
        waiting = store.checkout(cart((1, 3))).json()  # holds 3, may give them back
        shipped = store.checkout(cart((1, 2))).json()  # 2 that leave with the order
        store.choose(shipped["payment_url"], "pay")
        assert store.wait_for(shipped["order_id"])["status"] == "DISPATCHED"

        answer = store.http.post("/restock", json={"inventory": 10}).json()

        assert shelf_of(answer, 1) == {"product_id": 1, "on_hand": 10, "held": 3, "available": 7}
        assert store.stock()[1] == 7
        store.choose(waiting["payment_url"], "decline")
        assert store.wait_for(waiting["order_id"])["status"] == "CANCELLED"
        assert store.stock()[1] == 10, "the released units bring the shelf to what was asked"
        assert store.stock()[2] == 10


def test_a_restock_below_what_live_orders_hold_empties_the_shelf(store: Store) -> None:
    placed = store.checkout(cart((2, 5))).json()

    answer = store.http.post("/restock", json={"inventory": 2}).json()

    assert shelf_of(answer, 2) == {"product_id": 2, "on_hand": 2, "held": 5, "available": 0}
    assert store.checkout(cart((2, 1))).status_code == 409, "nothing left to sell"
    assert store.order(placed["order_id"])["status"] == "PENDING"


def test_restocks_racing_checkouts_on_postgres_never_deadlock(postgres_url: str) -> None:
    settings = replace(
        Settings.from_env({"WIDGET_STORE_DATABASE_URL": postgres_url}),
        payment_timeout_s=60.0,
        log_level="WARNING",
    )
    with Store.running(settings) as store:
        products = sorted(store.stock())
        # Put the rows' heap order against product order, as a day of updates does:
        # an UPDATE of every product then walks them in the other order.
        for product_id in reversed(products):
            store.execute(
                "UPDATE products SET inventory = 1000 WHERE product_id = :p", p=product_id
            )
        statuses: Counter[str] = Counter()
        lock = threading.Lock()
        done = threading.Event()

        def shop(seed: int) -> None:
            rng = random.Random(seed)
            while not done.is_set():
                lines = rng.sample(products, k=rng.randint(2, len(products)))
                response = store.checkout(cart(*((p, 1) for p in lines)))
                with lock:
                    statuses[f"checkout {response.status_code}"] += 1

        def restock() -> None:
            for round_ in range(20):
                response = store.http.post("/restock", json={"inventory": 1000 + round_})
                with lock:
                    statuses[f"restock {response.status_code}"] += 1

        shoppers = [threading.Thread(target=shop, args=(seed,)) for seed in range(6)]
        restockers = [threading.Thread(target=restock) for _ in range(2)]
        for thread in shoppers + restockers:
            thread.start()
        for thread in restockers:
            thread.join(timeout=120)
        done.set()
        for thread in shoppers:
            thread.join(timeout=60)

        assert statuses["restock 200"] == 40, statuses
        assert set(statuses) <= {"restock 200", "checkout 200", "checkout 409"}, statuses
        assert statuses["checkout 200"] > 0
        # Every hold taken during the race is counted once: on the shelf or held.
        held = {
            row["product_id"]: row["held"]
            for row in store.rows(
                "SELECT i.product_id, sum(i.quantity) AS held FROM order_items i "
                "JOIN orders o ON o.order_id = i.order_id "
                "WHERE o.reservation = 'held' AND o.status != 'DISPATCHED' GROUP BY i.product_id"
            )
        }
        stock = store.stock()
        assert {p: stock[p] + held.get(p, 0) for p in products} == dict.fromkeys(products, 1019)
