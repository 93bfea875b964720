"""What the shoppers' HTTP client costs the machine: httpx against aiohttp, in turns.

The shoppers run on the two cores the store under test runs on, so every millisecond of
CPU their client spends is taken from the store. This runs the same purchase (checkout,
signed webhook, long-poll until paid) with each client against one store, in turns, and
prints the benchmark process's own CPU per purchase beside the store's throughput.
`bench/load.py` uses the cheaper one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.load import BODY, PAID, LoadResult, percentile, shop
from bench.metrics import cpu_seconds
from bench.report import RESULTS
from bench.store import BenchStore, StoreOptions
from widget_store.payments import signed_webhook


async def shop_with_httpx(
    base_url: str, *, shoppers: int, seconds: float, secret: str, price_cents: int
) -> LoadResult:
    """The purchase of `bench.load.shop`, on httpx (what the benchmarks used before)."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=shoppers + 8, max_keepalive_connections=shoppers + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        stop_at = time.monotonic() + seconds
        started = time.monotonic()

        async def purchase() -> None:
            began = time.perf_counter()
            response = await client.post(f"/checkout/{uuid.uuid4().hex}", json=BODY)
            if response.status_code != 200:
                result.errors += 1
                return
            placed = response.json()
            signed = signed_webhook(secret, placed["payment_id"], "paid", price_cents)
            response = await client.post(signed.path, content=signed.body, headers=signed.headers)
            if response.status_code != 200:
                result.errors += 1
                return
            seen = 0
            while True:
                params = {"after_events": seen, "wait_s": 10}
                order = (await client.get(f"/order/{placed['order_id']}", params=params)).json()
                if order["status"] in PAID:
                    break
                seen = len(order["events"])
            result.purchases += 1
            result.purchase_ms.append((time.perf_counter() - began) * 1000)

        async def loop() -> None:
            while time.monotonic() < stop_at:
                await purchase()

        await asyncio.gather(*(loop() for _ in range(shoppers)))
        result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Turn:
    client: str
    purchases: int
    errors: int
    purchases_per_s: float
    client_cpu_ms_per_purchase: float
    store_cpu_ms_per_purchase: float
    purchase_p50_ms: float | None
    purchase_p99_ms: float | None


def _turn(store: BenchStore, client: str, shoppers: int, seconds: float) -> Turn:
    price = store.price_cents()
    load = shop_with_httpx if client == "httpx" else shop
    cpu, store_cpu = time.process_time(), cpu_seconds(store.pids())
    result = asyncio.run(
        load(
            store.base_url,
            shoppers=shoppers,
            seconds=seconds,
            secret=store.secret,
            price_cents=price,
        )
    )
    cpu_ms = (time.process_time() - cpu) * 1000
    store.settle()
    store_ms = (cpu_seconds(store.pids()) - store_cpu) * 1000
    return Turn(
        client,
        result.purchases,
        result.errors,
        result.rate,
        cpu_ms / result.purchases if result.purchases else 0.0,
        store_ms / result.purchases if result.purchases else 0.0,
        percentile(result.purchase_ms, 0.5),
        percentile(result.purchase_ms, 0.99),
    )


def run(
    shoppers: int = 32,
    seconds: float = 10.0,
    rounds: int = 3,
    workers: int = 2,
    results: Path = RESULTS,
    name: str = "load-client",
) -> Path:
    turns: list[Turn] = []
    with BenchStore(StoreOptions(workers=workers)) as store:
        for round_ in range(1, rounds + 1):
            for client in ("httpx", "aiohttp"):
                turn = _turn(store, client, shoppers, seconds)
                turns.append(turn)
                print(
                    f"round {round_} {client:<8} {turn.purchases_per_s:5.1f} purchases/s, "
                    f"client CPU {turn.client_cpu_ms_per_purchase:5.2f} ms/purchase, "
                    f"store CPU {turn.store_cpu_ms_per_purchase:5.1f} ms/purchase, "
                    f"p50 {turn.purchase_p50_ms or 0:.0f} ms, "
                    f"p99 {turn.purchase_p99_ms or 0:.0f} ms, {turn.errors} errors",
                    flush=True,
                )
    print(f"\n{shoppers} shoppers, {workers} workers, medians of {rounds} rounds:")
    for client in ("httpx", "aiohttp"):
        mine = [t for t in turns if t.client == client]
        cpu = statistics.median(t.client_cpu_ms_per_purchase for t in mine)
        rate = statistics.median(t.purchases_per_s for t in mine)
        served = statistics.median(t.store_cpu_ms_per_purchase for t in mine)
        print(
            f"  {client:<8} client CPU {cpu:5.2f} ms/purchase, store CPU {served:5.1f} "
            f"ms/purchase, {rate:5.1f} purchases/s"
        )
    path = results / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = {"shoppers": shoppers, "seconds": seconds, "rounds": rounds, "workers": workers}
    document = {"plan": plan, "turns": [asdict(t) for t in turns]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
