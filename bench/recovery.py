"""Crash recovery: kill -9 the app with checkouts in flight, and time its way back.

In flight at the moment of the kill: checkouts waiting for payment, paid ones in the
middle of booking their shipment (a "flaky" address makes the carrier fail twice, so the
shipment step is retrying), and paid ones in the middle of their dispatch. Measured from
the kill:

- serving: until a new app process answers /healthz;
- resumed: until DBOS has taken every in-flight workflow up again (each one's
  `recovery_attempts` went up in DBOS's workflow table);
- completed: until each was done (the waiting ones are paid as soon as the store serves
  again): paid for those that were waiting or shipping, dispatched for the dispatching.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from bench.store import BenchStore, StoreOptions
from widget_store.payments import signed_webhook

DISPATCH_S = 4.0


@dataclass(frozen=True)
class Recovery:
    in_flight: int
    serving_s: float
    resumed_s: float | None
    completed_s: float | None


def _body(address: str) -> dict[str, Any]:
    return {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": address}


async def _checkout(client: httpx.AsyncClient, address: str) -> dict[str, Any]:
    key = f"recovery-{uuid.uuid4().hex}"
    response = await client.post(f"/checkout/{key}", json=_body(address))
    response.raise_for_status()
    return {**response.json(), "key": key}


async def _pay(client: httpx.AsyncClient, secret: str, placed: dict[str, Any], price: int) -> None:
    webhook = signed_webhook(secret, placed["payment_id"], "paid", price)
    for _ in range(200):
        try:
            response = await client.post(
                webhook.path, content=webhook.body, headers=webhook.headers
            )
            if response.status_code < 500:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.02)


def _recovery_attempts(engine: sa.Engine, keys: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT workflow_uuid, recovery_attempts FROM dbos.workflow_status "
                "WHERE workflow_uuid = ANY(:keys)"
            ),
            {"keys": keys},
        )
        return {row.workflow_uuid: row.recovery_attempts for row in rows}


def _count(engine: sa.Engine, keys: list[str], statuses: tuple[str, ...]) -> int:
    with engine.connect() as conn:
        done = conn.execute(
            sa.text(
                "SELECT count(*) FROM orders WHERE checkout_key = ANY(:keys) "
                "AND status = ANY(:statuses)"
            ),
            {"keys": keys, "statuses": list(statuses)},
        ).scalar()
    return int(done or 0)


async def measure_recovery(store: BenchStore, in_flight: int) -> Recovery:
    third = max(1, in_flight // 3)
    price = store.price_cents()
    engine = sa.create_engine(store.database.sync_url, poolclass=sa.pool.NullPool)
    async with httpx.AsyncClient(base_url=store.base_url, timeout=60) as client:
        dispatching = [await _checkout(client, "1 Bench Street") for _ in range(third)]
        await asyncio.gather(*(_pay(client, store.secret, p, price) for p in dispatching))
        waiting = [await _checkout(client, "2 Bench Street") for _ in range(third)]
        shipping = [await _checkout(client, "3 flaky Bench Street") for _ in range(third)]
        await asyncio.sleep(0.5)  # the dispatching ones are now asleep in their dispatch
        keys = [p["key"] for p in dispatching + waiting + shipping]
        unpaid_then = [p["key"] for p in waiting + shipping]
        await asyncio.gather(*(_pay(client, store.secret, p, price) for p in shipping))
        before = _recovery_attempts(engine, keys)
        pid = store.server.worker_pid()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(store.server.new_worker_after, pid, 120)
        serving = time.monotonic() - killed
        paying = asyncio.gather(*(_pay(client, store.secret, p, price) for p in waiting))
        resumed = completed = None
        while time.monotonic() - killed < 60 and (resumed is None or completed is None):
            if resumed is None:
                now = _recovery_attempts(engine, keys)
                if all(now.get(key, 0) > before.get(key, 0) for key in keys):
                    resumed = time.monotonic() - killed
            paid = _count(engine, unpaid_then, ("PAID", "DISPATCHED"))
            dispatched = _count(engine, [p["key"] for p in dispatching], ("DISPATCHED",))
            if completed is None and paid + dispatched == len(keys):
                completed = time.monotonic() - killed
            await asyncio.sleep(0.02)
        await paying
    engine.dispose()
    return Recovery(len(keys), serving, resumed, completed)


def run(in_flight: int) -> Recovery:
    with BenchStore(StoreOptions(dispatch_s=DISPATCH_S)) as store:
        return asyncio.run(measure_recovery(store, in_flight))
