"""Two stores of two workers each on one PostgreSQL: they fit its connections, and buy.

PostgreSQL's default `max_connections` is 100. Each app process holds at most
`WIDGET_STORE_DB_POOL_SIZE` connections plus three long-lived ones (`durability.Pools`),
so four processes stay well inside it, under load. The stores get a PostgreSQL server of
their own, with that default, so that no other test's connections count against them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.chaos.cluster import PrivateCluster
from tests.helpers import Shopper, cart, new_key
from tests.server import ServerProcess, running_server
from widget_store.config import Database, Settings
from widget_store.durability import Pools

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("postgres_server_binaries")]

WORKERS = 2
SHOPPERS = 12  # at once, per store
PURCHASES = 24  # per store


@pytest.fixture
def postgres_of_its_own() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(max_connections=100)  # PostgreSQL's default
    cluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def two_stores(
    postgres_of_its_own: PrivateCluster, tmp_path: Path
) -> Iterator[list[tuple[ServerProcess, str]]]:
    with ExitStack() as stack:
        stores = []
        for name in ("first", "second"):
            url = postgres_of_its_own.new_database(name)
            env = {
                "WIDGET_STORE_DATABASE_URL": url,
                "WIDGET_STORE_WORKERS": str(WORKERS),
                "WIDGET_STORE_DISPATCH_S": "0",
                "WIDGET_STORE_LOG_LEVEL": "WARNING",
            }
            server = stack.enter_context(running_server(env, tmp_path / f"{name}.log"))
            stores.append((server, url))
        yield stores


def connections_to(url: str) -> int:
    name = sa.make_url(url).database
    engine = sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg", database="postgres"),
        poolclass=sa.pool.NullPool,
    )
    try:
        with engine.connect() as conn:
            count: int = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
            ).scalar_one()
            return count
    finally:
        engine.dispose()


def purchase(shopper: Shopper) -> str:
    """Checkout, the provider's signed verdict, and the order dispatched; what each answered."""
    for _attempt in range(20):
        reply = shopper.checkout(cart((1, 1)), key=new_key())
        if reply.status_code != 503:
            break
        time.sleep(float(reply.headers.get("Retry-After", "1")))
    if reply.status_code != 200:
        return f"checkout {reply.status_code}"
    placed = reply.json()
    total = shopper.http.get(f"/order/{placed['order_id']}").json()["total_cents"]
    webhook = shopper.webhook(placed["payment_id"], "paid", total)
    if webhook.status_code != 200:
        return f"webhook {webhook.status_code}"
    return str(shopper.wait_for(placed["order_id"], timeout=60)["status"])


def test_two_stores_of_two_workers_fit_one_postgres_and_every_purchase_completes(
    two_stores: list[tuple[ServerProcess, str]],
) -> None:
    shoppers = []
    for server, url in two_stores:
        server.http.post("/restock", json={"inventory": 1000}).raise_for_status()
        shoppers.append(Shopper(server.http, Settings(database=Database.parse(url))))

    peak = {url: 0 for _, url in two_stores}
    with ThreadPoolExecutor(max_workers=2 * SHOPPERS) as pool:
        futures = [pool.submit(purchase, s) for s in shoppers for _ in range(PURCHASES)]
        while not all(f.done() for f in futures):
            for _, url in two_stores:
                peak[url] = max(peak[url], connections_to(url))
            time.sleep(0.2)
        outcomes = Counter(f.result() for f in futures)

    assert outcomes == {"DISPATCHED": 2 * PURCHASES}, outcomes
    budget = WORKERS * Pools.of(Settings.db_pool_size).total
    for url, seen in peak.items():
        assert seen <= budget, f"{seen} connections to {url}, budget {budget}"
    assert sum(peak.values()) < 100, "both stores together inside max_connections"
