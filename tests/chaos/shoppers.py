"""Concurrent shoppers for chaos runs: mixed checkouts, retried like a real client would.

Every request that fails for lack of a server (connection refused, 502/503, a timeout)
is retried with the same idempotency key until the store gives a definitive answer, the
way a browser or a payment provider retries. What each shopper meant to happen and what
it saw is recorded, for the report.

The verdict reaches the store two ways, as it does in production: through the simulated
provider's hosted page (Pay or Decline, which calls the webhook in-process), or as a
signed `POST /payment_webhook/{payment_id}/{paid|failed}` straight to the store, the way
a real provider (or `widget-store webhook`) delivers it. Two in every five placed orders
of each kind take the second way, the first of each kind among them, so every kind is
paid both ways in any run long enough to place two of it.
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

from widget_store.payments import signed_webhook

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


class Channel(StrEnum):
    """How the provider's verdict reaches the store."""

    PAGE = "the provider's page"
    WEBHOOK = "a signed webhook, posted directly"


# Of every five placed orders of a kind, these take the direct webhook: 40 %, the first one too.
DIRECT_OF_FIVE = (0, 2)
# Kinds whose shopper delivers no verdict at all, so the channel means nothing for them.
NO_VERDICT = {Scenario.ABANDONED}


def channel_for(index_in_kind: int) -> Channel:
    """The channel of a kind's `index_in_kind`-th placed order (counting from 0)."""
    return Channel.WEBHOOK if index_in_kind % 5 in DIRECT_OF_FIVE else Channel.PAGE


@dataclass
class Checkout:
    scenario: Scenario
    key: str
    channel: Channel = Channel.PAGE
    order_id: int | None = None
    refused: str | None = None  # "out of stock", or why the store said no
    problems: list[str] = field(default_factory=list)
    # Requests of this checkout retried because the store (or its database) was down.
    outage_retries: int = 0
    # The store's last answer to the verdict (page or webhook), None if none was sent.
    verdict_status: int | None = None


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
        webhook_secret: str,
        give_up_after_s: float = 120.0,
    ) -> None:
        self.base_url = base_url
        self.total = total
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.give_up_after_s = give_up_after_s
        self.webhook_secret = webhook_secret
        self.checkouts: list[Checkout] = []
        self.retries: Counter[str] = Counter()
        self._next = 0
        self._of_kind: Counter[Scenario] = Counter()

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
                self._checkout(client, checkout, body),
                self._checkout(client, checkout, body),
            )
            if first.get("order_id") != second.get("order_id"):
                checkout.problems.append(f"same key, two answers: {first} / {second}")
            reply = first
        else:
            reply = await self._checkout(client, checkout, body)
        if "refused" in reply:
            checkout.refused = reply["refused"]
            return
        checkout.order_id = reply["order_id"]
        # Counted among the placed orders of its kind, so a kind often refused for want of
        # stock still has its share paid directly.
        checkout.channel = channel_for(self._of_kind[scenario])
        self._of_kind[scenario] += 1
        await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # a shopper reading the payment page
        if scenario is Scenario.ABANDONED:
            return
        paid = scenario is not Scenario.DECLINED
        times = 2 if scenario is Scenario.PAID_TWICE else 1  # a provider delivering twice
        if checkout.channel is Channel.WEBHOOK:
            total = await self._total(client, checkout, reply)
            event_id = f"evt_{uuid.uuid4().hex}"  # a redelivery repeats the event
            deliver = [
                self._post_webhook(client, checkout, reply["payment_id"], paid, total, event_id)
                for _ in range(times)
            ]
        else:
            decision = "pay" if paid else "decline"
            deliver = [
                self._choose(client, checkout, reply["payment_url"], decision) for _ in range(times)
            ]
        await asyncio.gather(*deliver)

    async def _checkout(
        self, client: httpx.AsyncClient, checkout: Checkout, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = checkout.key
        response = await self._retrying(
            checkout, "checkout", lambda: client.post(f"/checkout/{key}", json=body)
        )
        if response.status_code == 200:
            reply: dict[str, Any] = response.json()
            return reply
        if response.status_code == 409 and "short_items" in response.text:
            return {"refused": "out of stock"}
        return {"refused": f"{response.status_code}: {response.text[:200]}"}

    async def _choose(
        self, client: httpx.AsyncClient, checkout: Checkout, payment_url: str, decision: str
    ) -> None:
        response = await self._retrying(
            checkout, "payment page", lambda: client.post(f"{payment_url}/{decision}")
        )
        checkout.verdict_status = response.status_code

    async def _total(
        self, client: httpx.AsyncClient, checkout: Checkout, reply: dict[str, Any]
    ) -> int:
        """The order's total, read from the store the way the provider knows the amount."""
        path = f"/order/{reply['order_id']}?token={reply['order_token']}"
        response = await self._retrying(checkout, "order", lambda: client.get(path))
        if response.status_code != 200:
            raise GaveUp(f"order read answered {response.status_code}: {response.text[:200]}")
        total: int = response.json()["total_cents"]
        return total

    async def _post_webhook(
        self,
        client: httpx.AsyncClient,
        checkout: Checkout,
        payment_id: str,
        paid: bool,
        amount_cents: int,
        event_id: str,
    ) -> None:
        """The provider's verdict, signed afresh at each attempt as a provider would."""
        status = "paid" if paid else "failed"

        def send() -> Awaitable[httpx.Response]:
            hook = signed_webhook(
                self.webhook_secret, payment_id, status, amount_cents, event_id=event_id
            )
            return client.post(hook.path, content=hook.body, headers=hook.headers)

        response = await self._retrying(checkout, "webhook", send)
        checkout.verdict_status = response.status_code
        if response.status_code != 200 and response.status_code != 409:
            # 409 is the store saying the payment is closed (past its deadline, say);
            # anything else means the harness or the store got the webhook wrong.
            checkout.problems.append(f"webhook answered {response.status_code}: {response.text}")

    async def _retrying(
        self, checkout: Checkout, what: str, send: Callable[[], Awaitable[httpx.Response]]
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
            checkout.outage_retries += 1
            if time.monotonic() > deadline:
                raise GaveUp(f"{what}: no answer in {self.give_up_after_s}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
