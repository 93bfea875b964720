"""Concurrent shoppers for chaos runs: mixed checkouts, retried like a real client would.

Every request that fails for lack of a server (connection refused, 502/503, a timeout)
is retried with the same idempotency key until the store gives a definitive answer, the
way a browser or a payment provider retries. What each shopper meant to happen and what
it saw is recorded, for the report.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

RETRYABLE_STATUS = {502, 503, 504}
SCARCE_PRODUCT = 4
ADDRESS = "12 Chaos Avenue, Faultline"


class Scenario(StrEnum):
    PAID = "paid"
    PAID_TWICE = "paid, webhook delivered twice"
    DECLINED = "declined"
    ABANDONED = "never paid"
    INVALID_ADDRESS = "invalid address"
    FLAKY_ADDRESS = "flaky address"
    SAME_KEY_TWICE = "checkout retried with the same key"
    SCARCE = "racing for scarce stock"


WEIGHTS = {
    Scenario.PAID: 30,
    Scenario.PAID_TWICE: 10,
    Scenario.DECLINED: 12,
    Scenario.ABANDONED: 8,
    Scenario.INVALID_ADDRESS: 8,
    Scenario.FLAKY_ADDRESS: 8,
    Scenario.SAME_KEY_TWICE: 8,
    Scenario.SCARCE: 16,
}

EXPECTED = {
    Scenario.PAID: ("DISPATCHED", None),
    Scenario.PAID_TWICE: ("DISPATCHED", None),
    Scenario.DECLINED: ("CANCELLED", "payment declined"),
    Scenario.ABANDONED: ("CANCELLED", "payment timed out"),
    Scenario.INVALID_ADDRESS: ("CANCELLED", "shipping failed"),
    Scenario.FLAKY_ADDRESS: ("DISPATCHED", None),
    Scenario.SAME_KEY_TWICE: ("DISPATCHED", None),
    Scenario.SCARCE: ("DISPATCHED", None),
}


@dataclass
class Checkout:
    scenario: Scenario
    key: str
    order_id: int | None = None
    refused: str | None = None  # "out of stock", or why the store said no
    problems: list[str] = field(default_factory=list)


class GaveUp(Exception):
    pass


class Shoppers:
    def __init__(
        self,
        base_url: str,
        *,
        total: int,
        concurrency: int,
        seed: int,
        give_up_after_s: float = 120.0,
    ) -> None:
        self.base_url = base_url
        self.total = total
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.give_up_after_s = give_up_after_s
        self.checkouts: list[Checkout] = []
        self.retries: Counter[str] = Counter()
        self._next = 0

    @property
    def started(self) -> int:
        return self._next

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60, limits=limits) as client:
            await asyncio.gather(*(self._shopper(client) for _ in range(self.concurrency)))

    async def _shopper(self, client: httpx.AsyncClient) -> None:
        while self._next < self.total:
            self._next += 1
            scenario = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
            checkout = Checkout(scenario, f"chaos-{uuid.uuid4().hex}")
            self.checkouts.append(checkout)
            try:
                await self._shop(client, checkout)
            except GaveUp as error:
                checkout.problems.append(str(error))

    async def _shop(self, client: httpx.AsyncClient, checkout: Checkout) -> None:
        scenario = checkout.scenario
        address = ADDRESS
        if scenario is Scenario.INVALID_ADDRESS:
            address = "1 invalid street"
        elif scenario is Scenario.FLAKY_ADDRESS:
            address = "2 flaky road"
        if scenario is Scenario.SCARCE:
            lines = [(SCARCE_PRODUCT, self.rng.randint(1, 3))]
        else:
            lines = [(self.rng.randint(1, 3), self.rng.randint(1, 3))]
        body = {
            "items": [{"product_id": p, "quantity": q} for p, q in lines],
            "shipping_address": address,
        }
        if scenario is Scenario.SAME_KEY_TWICE:
            first, second = await asyncio.gather(
                self._checkout(client, checkout.key, body),
                self._checkout(client, checkout.key, body),
            )
            if first.get("order_id") != second.get("order_id"):
                checkout.problems.append(f"same key, two answers: {first} / {second}")
            reply = first
        else:
            reply = await self._checkout(client, checkout.key, body)
        if "refused" in reply:
            checkout.refused = reply["refused"]
            return
        checkout.order_id = reply["order_id"]
        payment_url = reply["payment_url"]
        await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # a shopper reading the payment page
        if scenario is Scenario.ABANDONED:
            return
        decision = "decline" if scenario is Scenario.DECLINED else "pay"
        if scenario is Scenario.PAID_TWICE:
            await asyncio.gather(
                self._choose(client, payment_url, decision),
                self._choose(client, payment_url, decision),
            )
        else:
            await self._choose(client, payment_url, decision)

    async def _checkout(
        self, client: httpx.AsyncClient, key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        response = await self._retrying(
            "checkout", lambda: client.post(f"/checkout/{key}", json=body)
        )
        if response.status_code == 200:
            reply: dict[str, Any] = response.json()
            return reply
        if response.status_code == 409 and "short_items" in response.text:
            return {"refused": "out of stock"}
        return {"refused": f"{response.status_code}: {response.text[:200]}"}

    async def _choose(self, client: httpx.AsyncClient, payment_url: str, decision: str) -> None:
        await self._retrying("payment page", lambda: client.post(f"{payment_url}/{decision}"))

    async def _retrying(
        self, what: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after_s
        delay = 0.1
        while True:
            try:
                response = await send()
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                self.retries[f"{what}: {response.status_code}"] += 1
            except httpx.TransportError as error:
                self.retries[f"{what}: {type(error).__name__}"] += 1
            if time.monotonic() > deadline:
                raise GaveUp(f"{what}: no answer in {self.give_up_after_s}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
