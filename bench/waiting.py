"""Many checkouts waiting for payment: what they cost the app while they wait.

Each waiting checkout is a DBOS workflow suspended in `recv`. With async workflows that
should be a coroutine, not a thread; this measures the app's memory and threads with
N of them open, the throughput other shoppers get meanwhile against a store like it with
none waiting (in turns, medians), and how fast the N drain once they are all paid.

The payment deadline is set far out, so that none of them times out while thousands are
opened and paid; the drain rate is measured over at most `DRAIN_WINDOW_S`, since at a
few purchases a second 10,000 would take most of an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from bench.load import BODY
from bench.metrics import rss_mb, threads
from bench.store import BenchStore, StoreOptions
from bench.throughput import run_level
from widget_store.payments import signed_webhook

PAYMENT_TIMEOUT_S = 6 * 3600.0
DRAIN_WINDOW_S = 180.0
ROUNDS = 3  # turns each, for the other shoppers' throughput (medians)


@dataclass(frozen=True)
class Waiting:
    waiting: int
    opened_per_s: float
    rss_mb_idle: float
    rss_mb_waiting: float
    threads_idle: int
    threads_waiting: int
    purchases_per_s_idle: float  # on a store like it with none waiting, in turns
    purchases_per_s_waiting: float
    idle_turns: list[float]
    waiting_turns: list[float]
    drained_per_s: float
    drain_window_s: float


async def _open(base_url: str, count: int, concurrency: int = 32) -> list[dict[str, str]]:
    opened: list[dict[str, str]] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                response = await client.post(f"/checkout/wait-{uuid.uuid4().hex}", json=BODY)
                if response.status_code == 200:
                    opened.append(response.json())

        await asyncio.gather(*(one() for _ in range(count)))
    return opened


async def _pay_all(
    base_url: str, secret: str, placed: list[dict[str, str]], price: int, concurrency: int = 32
) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def pay(order: dict[str, str]) -> None:
            webhook = signed_webhook(secret, order["payment_id"], "paid", price)
            async with semaphore:
                await client.post(webhook.path, content=webhook.body, headers=webhook.headers)

        await asyncio.gather(*(pay(order) for order in placed))


def _paid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM orders WHERE status IN ('PAID', 'DISPATCHED')")
        ).scalar()
    return int(count or 0)


def _pay_for_at_most(
    window_s: float, base_url: str, secret: str, placed: list[dict[str, str]], price: int
) -> None:
    async def pay() -> None:
        with contextlib.suppress(TimeoutError):  # the window is over: the rest stay unpaid
            await asyncio.wait_for(_pay_all(base_url, secret, placed, price), window_s)

    asyncio.run(pay())


def _throughput(store: BenchStore, shoppers: int, seconds: float) -> float:
    return run_level(store, shoppers, seconds, None, count_commits=False).purchases_per_s


def run(waiting: int, seconds: float, shoppers: int = 32, rounds: int = ROUNDS) -> Waiting:
    """The other shoppers' throughput is measured in turns, flipping each round, on this
    store with the N waiting and on a second store like it (its own PostgreSQL) with none:
    measured one after the other on one store, the machine's drift between the two
    measurements was as large as the effect."""
    options = StoreOptions(payment_timeout_s=PAYMENT_TIMEOUT_S)
    with BenchStore(options) as store, BenchStore(options) as control:
        worker = store.server.worker_pid()
        for each in (store, control):  # warm up: connection pools, caches, thread pool
            _throughput(each, shoppers, seconds)
        rss_idle, threads_idle = rss_mb(worker), threads(worker)
        started = time.monotonic()
        placed = asyncio.run(_open(store.base_url, waiting))
        opened_per_s = len(placed) / (time.monotonic() - started)
        rss_waiting, threads_waiting = rss_mb(worker), threads(worker)
        idle_turns: list[float] = []
        busy_turns: list[float] = []
        for round_ in range(rounds):
            turns = [(control, idle_turns), (store, busy_turns)]
            for each, into in turns if round_ % 2 == 0 else reversed(turns):
                into.append(_throughput(each, shoppers, seconds))
        idle, busy = statistics.median(idle_turns), statistics.median(busy_turns)
        price = store.price_cents()
        engine = sa.create_engine(store.database.sync_url, poolclass=sa.pool.NullPool)
        before = _paid(engine)
        started = time.monotonic()
        payer = threading.Thread(
            target=_pay_for_at_most,
            args=(DRAIN_WINDOW_S, store.base_url, store.secret, placed, price),
        )
        payer.start()
        while _paid(engine) < before + len(placed) and time.monotonic() - started < DRAIN_WINDOW_S:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        drained = (_paid(engine) - before) / elapsed
        payer.join()
        engine.dispose()
        return Waiting(
            waiting=len(placed),
            opened_per_s=opened_per_s,
            rss_mb_idle=rss_idle,
            rss_mb_waiting=rss_waiting,
            threads_idle=threads_idle,
            threads_waiting=threads_waiting,
            purchases_per_s_idle=idle,
            purchases_per_s_waiting=busy,
            idle_turns=idle_turns,
            waiting_turns=busy_turns,
            drained_per_s=drained,
            drain_window_s=elapsed,
        )
