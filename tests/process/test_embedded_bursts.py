"""The embedded default never wedges: bursts it cannot absorb are shed, then it sells again.

Bursts of 40-64 concurrent checkouts once left the SQLite store unable to take any
checkout while /healthz said 200. Here the real `widget-store serve`, on a SQLite file
and its default bound, takes four bursts of 64: every answer is a 200, a 409 (out of
stock) or a 503 with Retry-After, none hangs and none is a 500; some are shed; /healthz
is 200 afterwards; and a shopper then buys and pays as usual.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Shopper, cart, eventually
from tests.server import ServerProcess, running_server
from widget_store.config import Settings

BURSTS = 4
SHOPPERS = 64
# A checkout that has not answered in this long has hung (it answers 503 by 30 s itself).
HANG_S = 45.0


@pytest.fixture
def server(sqlite_template: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    database = tmp_path / "store.sqlite"
    shutil.copy(sqlite_template, database)
    env = {
        "WIDGET_STORE_DATABASE_URL": f"sqlite:///{database}",
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": "300",
        "WIDGET_STORE_DISPATCH_S": "0",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as running:
        yield running


async def burst(base_url: str, rng: random.Random) -> list[tuple[int | str, float, str | None]]:
    """64 checkouts at once, each on its own connection; (status, seconds, Retry-After)."""

    async def one(client: httpx.AsyncClient) -> tuple[int | str, float, str | None]:
        lines = [(product, rng.randint(1, 3)) for product in rng.sample([1, 2, 3], k=2)]
        started = time.monotonic()
        try:
            response = await client.post(
                f"/checkout/burst-{uuid.uuid4().hex}",
                json=cart(*lines),
                headers={"Connection": "close"},
            )
        except httpx.HTTPError as error:
            return type(error).__name__, time.monotonic() - started, None
        return response.status_code, time.monotonic() - started, response.headers.get("retry-after")

    async with httpx.AsyncClient(
        base_url=base_url, timeout=HANG_S, limits=httpx.Limits(max_connections=SHOPPERS)
    ) as client:
        return await asyncio.gather(*(one(client) for _ in range(SHOPPERS)))


def test_bursts_are_answered_or_shed_and_the_store_then_sells_normally(
    server: ServerProcess,
) -> None:
    rng = random.Random(9)
    answers: Counter[int | str] = Counter()
    slowest = 0.0
    for _ in range(BURSTS):
        results = asyncio.run(burst(server.base_url, rng))
        for status, took, retry_after in results:
            answers[status] += 1
            slowest = max(slowest, took)
            assert status in (200, 409, 503), f"{status} after {took:.1f} s:\n{server.log()}"
            if status == 503:
                assert retry_after is not None, "a shed checkout says when to come back"

    assert answers[200] > 0, answers
    assert answers[503] > 0, f"a burst past the bound is shed: {answers}"
    assert slowest < HANG_S
    health = eventually(
        lambda: server.http.get("/healthz"),
        lambda response: response.status_code == 200,
        timeout=30,
        what="/healthz answering 200 after the bursts",
    )
    assert health.json()["status"] == "ok"

    shopper = Shopper(server.http, Settings.from_env({}))
    server.http.post("/restock", json={"inventory": 500})
    placed = eventually(
        lambda: shopper.checkout(cart((1, 1), (2, 1))),
        lambda response: response.status_code == 200,
        timeout=30,
        what="a normal checkout being taken",
    ).json()
    assert shopper.choose(placed["payment_url"], "pay").status_code == 303
    assert shopper.wait_for(placed["order_id"], timeout=60)["status"] == "DISPATCHED"
