"""Kill the real server mid-checkout: every order still ends where it should, exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import Shopper, cart
from tests.server import ServerProcess, running_server
from widget_store.config import Database, Settings

DISPATCH_S = 3.0


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> ServerProcess:
    env = {
        "WIDGET_STORE_DATABASE_URL": database_url,
        "WIDGET_STORE_DISPATCH_S": str(DISPATCH_S),
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": "300",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as running:
        yield running  # type: ignore[misc]


def test_orders_survive_kill_9_and_the_crash_button(
    server: ServerProcess, database_url: str
) -> None:
    settings = Settings(database=Database.parse(database_url))
    shopper = Shopper(server.http, settings)
    initial = shopper.stock()

    waiting = [shopper.checkout(cart((1, 1), (2, 1))).json() for _ in range(3)]
    dispatching = [shopper.checkout(cart((3, 2))).json() for _ in range(2)]
    for order in dispatching:
        assert shopper.choose(order["payment_url"], "pay").status_code == 303
        shopper.wait_for(order["order_id"], "PAID")

    # Crash one: kill -9 while three orders wait for payment and two are being dispatched.
    server.kill_worker()

    pay_now, decline, pay_later = waiting
    assert shopper.choose(pay_now["payment_url"], "pay").status_code == 303
    assert shopper.choose(decline["payment_url"], "decline").status_code == 303
    shopper.wait_for(pay_now["order_id"], "PAID")

    # Crash two: the crash button, while one order dispatches and one still waits.
    server.press_crash_button()
    assert shopper.choose(pay_later["payment_url"], "pay").status_code == 303

    final = {
        o["order_id"]: shopper.wait_for(o["order_id"], timeout=60) for o in waiting + dispatching
    }

    assert final[decline["order_id"]]["status"] == "CANCELLED"
    assert final[decline["order_id"]]["cancel_reason"] == "payment declined"
    dispatched = [pay_now, pay_later, *dispatching]
    outcomes = {o["order_id"]: final[o["order_id"]]["status"] for o in dispatched}
    assert set(outcomes.values()) == {"DISPATCHED"}, final

    # Nothing done twice: each step's event once per order, one shipment per dispatched order.
    for order in final.values():
        counts = Counter(event["type"] for event in order["events"])
        assert max(counts.values()) == 1, f"a step ran twice in order {order['order_id']}: {counts}"
    engine = sa.create_engine(settings.database.sync_url)
    with engine.connect() as conn:
        shipments = (
            conn.execute(sa.text("SELECT shipment_key FROM carrier_shipments")).scalars().all()
        )
        captured = conn.execute(
            sa.text("SELECT count(*) FROM provider_payments WHERE status = 'captured'")
        ).scalar()
    engine.dispose()
    assert sorted(shipments) == sorted(f"order-{o['order_id']}" for o in dispatched)
    assert captured == len(dispatched)

    # Stock is conserved: what left the shelf is exactly what was dispatched.
    sold = Counter[int]()
    for order in dispatched:
        for item in final[order["order_id"]]["items"]:
            sold[item["product_id"]] += item["quantity"]
    now = shopper.stock()
    assert {p: initial[p] - now[p] for p in initial} == {p: sold.get(p, 0) for p in initial}
