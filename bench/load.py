"""Shoppers for benchmarks: each buys in a loop, over HTTP, exactly as a client would.

One purchase is the classic demo's: the checkout call, the payment provider's signed
webhook, then watching the order until it is visibly paid (long-polling, so each answer
brings news rather than another "not yet": one request that waits for the order to leave
PENDING, or, on a store without `after_status`, requests that wait for more log entries).

The shoppers share the machine with the store they measure, so their client must cost it
little: aiohttp spends about 2 ms of CPU per purchase here, where httpx spent 8-13 ms (a
fifth of what the two cores had to give at 32 shoppers, taken from the store under test).
`python -m bench client` measures the two in turns against one store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

from widget_store.payments import SIGNATURE_HEADER, sign_webhook, signed_webhook

BODY = {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "1 Bench Street"}
PAID = ("PAID", "DISPATCHED")
POLL_S = 0.05  # after an error only


@dataclass
class LoadResult:
    purchases: int = 0
    errors: int = 0
    checkout_ms: list[float] = field(default_factory=list)
    webhook_ms: list[float] = field(default_factory=list)
    purchase_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.purchases / self.seconds if self.seconds else 0.0


class Buyer:
    def __init__(
        self,
        client: aiohttp.ClientSession,
        secret: str,
        price_cents: int,
        poll_s: float | None = None,
        webhook_names_payment: bool = True,
        watches_status: bool = True,
    ) -> None:
        self.client = client
        self.secret = secret
        self.price_cents = price_cents
        self.poll_s = poll_s  # None: long-poll; else poll the order this often
        # False for version 0.1, whose signed body held only the event and the amount.
        self.webhook_names_payment = webhook_names_payment
        # False for version 0.1, whose long poll waited only for more log entries.
        self.watches_status = watches_status

    async def open_checkout(self, result: LoadResult) -> dict[str, str] | None:
        key = f"bench-{uuid.uuid4().hex}"
        started = time.perf_counter()
        async with self.client.post(f"/checkout/{key}", json=BODY) as response:
            reply: dict[str, str] | None = await response.json() if response.status == 200 else None
        result.checkout_ms.append((time.perf_counter() - started) * 1000)
        if reply is None:
            result.errors += 1
        return reply

    def webhook(self, payment_id: str) -> tuple[str, bytes, dict[str, str]]:
        """The provider's signed "paid" webhook: its path, body and headers."""
        if self.webhook_names_payment:
            signed = signed_webhook(self.secret, payment_id, "paid", self.price_cents)
            return signed.path, signed.body, signed.headers
        body = json.dumps(
            {"event_id": f"evt_{uuid.uuid4().hex}", "amount_cents": self.price_cents}
        ).encode()
        headers = {
            SIGNATURE_HEADER: sign_webhook(self.secret, int(time.time()), body),
            "Content-Type": "application/json",
        }
        return f"/payment_webhook/{payment_id}/paid", body, headers

    async def pay(self, placed: dict[str, str], result: LoadResult) -> bool:
        path, body, headers = self.webhook(placed["payment_id"])
        started = time.perf_counter()
        async with self.client.post(path, data=body, headers=headers) as response:
            await response.read()
        result.webhook_ms.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            result.errors += 1
            return False
        return True

    async def until_paid(self, order_id: object, timeout_s: float = 60) -> bool:
        """Long-poll the order (each answer comes with news) until it shows as paid."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            params: dict[str, float | str]
            if self.poll_s is None and self.watches_status:
                params = {"after_status": "PENDING", "wait_s": 10}
            elif self.poll_s is None:
                params = {"after_events": seen, "wait_s": 10}
            else:
                params = {}
                await asyncio.sleep(self.poll_s)
            async with self.client.get(f"/order/{order_id}", params=params) as response:
                order = await response.json() if response.status == 200 else None
            if order is None:
                await asyncio.sleep(POLL_S)
                continue
            if order["status"] in PAID:
                return True
            seen = len(order["events"])
        return False

    async def purchase(self, result: LoadResult) -> None:
        started = time.perf_counter()
        try:
            placed = await self.open_checkout(result)
            if placed is None or not await self.pay(placed, result):
                return
            if not await self.until_paid(placed["order_id"]):
                result.errors += 1
                return
        except (aiohttp.ClientError, TimeoutError):
            result.errors += 1
            return
        result.purchases += 1
        result.purchase_ms.append((time.perf_counter() - started) * 1000)


async def shop(
    base_url: str,
    *,
    shoppers: int,
    seconds: float,
    secret: str,
    price_cents: int,
    poll_s: float | None = None,
    webhook_names_payment: bool = True,
    watches_status: bool = True,
) -> LoadResult:
    """`shoppers` concurrent buyers, each purchasing in a loop for `seconds`."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=shoppers + 8)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:
        buyer = Buyer(client, secret, price_cents, poll_s, webhook_names_payment, watches_status)
        stop_at = time.monotonic() + seconds
        started = time.monotonic()

        async def loop() -> None:
            while time.monotonic() < stop_at:
                await buyer.purchase(result)

        await asyncio.gather(*(loop() for _ in range(shoppers)))
        result.seconds = time.monotonic() - started
    return result


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
