"""The order event stream under fire: 300 checkouts of every kind, the broker stopped for
part of the run, the relay and the consumer each killed once.

Afterwards every committed state change has exactly one event in the stream, in
per-order sequence order; the consumer's projection matches every order's final status;
and no event exists for a change that did not commit.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.broker import NatsServer, stream_messages
from tests.helpers import Shopper, cart, eventually
from tests.server import ServerProcess, running_server, widget_store_command
from widget_store.config import Database, Settings

pytestmark = pytest.mark.postgres

CHECKOUTS = 300
SHOPPERS = 12
KINDS = [
    "paid on the page",
    "paid by webhook",
    "declined on the page",
    "declined by webhook",
    "never paid",
    "undeliverable",
    "flaky carrier",
    "out of stock",
]
SCARCE = 4  # the product that runs out
PAYMENT_TIMEOUT_S = 4


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(Database.parse(url).sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


class Consumer:
    """`widget-store consume` in a process of its own, as a team would run it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = {**os.environ, **env}
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [*widget_store_command(), "consume"], env=self._env, stdout=log, stderr=log
            )

    def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def stream(
    empty_postgres_databases: Callable[[], str], nats_server: NatsServer, tmp_path: Path
) -> Iterator[tuple[ServerProcess, str, Consumer, str]]:
    url = empty_postgres_databases()
    projection = f"sqlite:///{tmp_path / 'projection.sqlite'}"
    env = {
        "WIDGET_STORE_DATABASE_URL": url,
        "WIDGET_STORE_NATS_URL": nats_server.url,
        "WIDGET_STORE_CONSUMER_DATABASE_URL": projection,
        "WIDGET_STORE_DISPATCH_S": "0",
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": str(PAYMENT_TIMEOUT_S),
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "store.log") as server:
        consumer = Consumer(env, tmp_path / "consumer.log")
        consumer.start()
        try:
            yield server, url, consumer, projection
        finally:
            consumer.stop()


def shop(shopper: Shopper, kind: str) -> None:
    """One checkout of the given kind, retried through outages the way a browser would."""
    address = {"undeliverable": "1 invalid street", "flaky carrier": "2 flaky lane"}.get(
        kind, "1 Main Street"
    )
    product = SCARCE if kind == "out of stock" else 1
    key = f"stream-{uuid.uuid4().hex}"
    reply = eventually(
        lambda: shopper.checkout(cart((product, 1), address=address), key=key),
        lambda r: r.status_code not in (502, 503, 504),
        timeout=60,
    )
    if reply.status_code != 200:
        return
    placed = reply.json()
    if kind in ("never paid", "out of stock"):
        return
    if kind.endswith("by webhook"):
        order = eventually(lambda: shopper.http.get(f"/order/{placed['order_id']}"), timeout=60)
        total = order.json()["total_cents"]
        status = "failed" if kind.startswith("declined") else "paid"
        eventually(
            lambda: shopper.webhook(placed["payment_id"], status, total),
            lambda r: r.status_code < 500,
            timeout=60,
        )
    else:
        decision = "decline" if kind.startswith("declined") else "pay"
        eventually(
            lambda: shopper.choose(placed["payment_url"], decision),
            lambda r: r.status_code < 500,
            timeout=60,
        )


def test_every_committed_change_reaches_the_stream_once_in_order_through_faults(
    stream: tuple[ServerProcess, str, Consumer, str], nats_server: NatsServer
) -> None:
    server, url, consumer, projection = stream
    shopper = Shopper(server.http, Settings(database=Database.parse(url)))
    server.http.post("/restock", json={"inventory": 1000}).raise_for_status()
    rows(url, "UPDATE products SET inventory = 10 WHERE product_id = :p", p=SCARCE)
    rng = random.Random(13)
    kinds = [KINDS[i % len(KINDS)] for i in range(CHECKOUTS)]
    rng.shuffle(kinds)

    def faults() -> None:
        time.sleep(3)
        nats_server.stop()  # the broker goes away while shoppers buy
        time.sleep(2)
        server.kill_worker()  # the relay dies with its process, mid-run
        time.sleep(3)
        nats_server.start()
        time.sleep(2)
        consumer.kill()  # mid-batch
        consumer.start()

    chaos = threading.Thread(target=faults)
    chaos.start()
    with ThreadPoolExecutor(max_workers=SHOPPERS) as pool:
        list(pool.map(lambda kind: shop(shopper, kind), kinds))
    chaos.join()

    eventually(
        lambda: rows(url, "SELECT count(*) AS n FROM orders WHERE status IN ('PENDING', 'PAID')"),
        lambda r: r[0].n == 0,
        timeout=120,
        every=0.5,
        what="every order ending",
    )
    eventually(
        lambda: rows(url, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"),
        lambda r: r[0].n == 0,
        timeout=60,
        every=0.5,
        what="the outbox draining",
    )
    events = rows(url, "SELECT order_id, type FROM order_events ORDER BY event_id")
    outbox = rows(url, "SELECT event_id, aggregate_id, seq, type FROM outbox ORDER BY outbox_id")
    orders = {r.order_id: r.status for r in rows(url, "SELECT order_id, status FROM orders")}
    total_events = len(events)
    # A message the killed consumer had fetched comes back after its ack wait (30 s).
    eventually(
        lambda: rows(projection, "SELECT coalesce(sum(events), 0) AS n FROM order_projection"),
        lambda r: r[0].n >= total_events,
        timeout=120,
        every=0.5,
        what=f"the consumer catching up with {total_events} events",
    )
    published = asyncio.run(stream_messages(nats_server.url))

    # Every committed change has exactly one event, and nothing else is in the stream.
    logged: dict[int, list[str]] = defaultdict(list)
    for event in events:
        logged[event.order_id].append(event.type)
    boxed: dict[int, list[str]] = defaultdict(list)
    for row in outbox:
        boxed[row.aggregate_id].append(row.type)
    differ = {o: (boxed[o], logged[o]) for o in set(boxed) | set(logged) if boxed[o] != logged[o]}
    assert not differ, f"the outbox holds exactly the log's committed entries: {differ}"
    ids = [m.event.event_id for m in published]
    assert len(ids) == len(set(ids)), "no event published twice"
    assert set(ids) == {row.event_id for row in outbox}, "every committed change, nothing more"
    assert all(m.msg_id == m.event.event_id for m in published)
    # In per-order sequence order.
    seqs: dict[int, list[int]] = defaultdict(list)
    for message in published:
        seqs[message.event.aggregate_id].append(message.event.seq)
    for order_id, order_seqs in seqs.items():
        assert order_seqs == list(range(1, len(order_seqs) + 1)), order_id
    # The projection agrees with every order's final state.
    seen = {r.order_id: r for r in rows(projection, "SELECT * FROM order_projection")}
    assert set(seen) == set(orders)
    wrong = {
        order_id: (status, logged[order_id], seen[order_id].status, seen[order_id].events)
        for order_id, status in orders.items()
        if (seen[order_id].status, seen[order_id].events) != (status, len(logged[order_id]))
    }
    assert not wrong, wrong
    assert len(orders) == CHECKOUTS, "every checkout was answered with an order"
