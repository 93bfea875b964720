"""A process takes on only so many checkouts at once, and says when its work has stalled.

A burst past the bound gets a quick 503 with Retry-After instead of queueing for the
write lock; /healthz fails when work is in flight and none of it finishes, and recovers
once it does. A payment provider that hangs when asked to open a payment holds
checkouts in their start, deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest

from tests.helpers import Store, cart, eventually, eventually_async
from widget_store.admission import ADMISSION_WAIT_S
from widget_store.config import Settings
from widget_store.payments import PaymentGivenBack, PaymentProvider, PaymentRequest


class HangsWhenOpening:
    """The provider, hanging on every new payment until `released` is set."""

    def __init__(self, provider: PaymentProvider) -> None:
        self.provider = provider
        self.released = threading.Event()
        self.waiting = 0

    async def create_payment(self, request: PaymentRequest) -> str:
        self.waiting += 1
        await eventually_async(
            self.released.is_set, timeout=60, every=0.02, what="the test releasing the provider"
        )
        return await self.provider.create_payment(request)

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        return await self.provider.give_back(payment_id, idempotency_key)


@pytest.fixture
def hanging(settings: Settings) -> Iterator[tuple[Store, HangsWhenOpening]]:
    adapters: list[HangsWhenOpening] = []

    def wrap(provider: PaymentProvider) -> PaymentProvider:
        adapters.append(HangsWhenOpening(provider))
        return adapters[-1]

    limited = replace(settings, max_starting_checkouts=1, unhealthy_after_s=0.5)
    with Store.running(limited, payments=wrap) as store, ThreadPoolExecutor(4) as pool:
        store.pool = pool  # type: ignore[attr-defined]
        try:
            yield store, adapters[0]
        finally:
            adapters[0].released.set()


def in_background(store: Store, key: str) -> Future[httpx.Response]:
    pool: ThreadPoolExecutor = store.pool  # type: ignore[attr-defined]
    return pool.submit(store.checkout, cart((1, 1)), key)


def test_past_the_bound_a_checkout_is_refused_at_once_with_retry_after(
    hanging: tuple[Store, HangsWhenOpening],
) -> None:
    store, provider = hanging
    first = in_background(store, "first")
    eventually(lambda: provider.waiting, what="the first checkout holding its place")

    started = time.monotonic()
    refused = store.checkout(cart((1, 1)), key="second")
    took = time.monotonic() - started

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "busy" in refused.json()["detail"] and "same idempotency key" in refused.json()["detail"]
    assert ADMISSION_WAIT_S <= took < ADMISSION_WAIT_S + 5
    assert store.scalar("SELECT count(*) FROM orders WHERE checkout_key = 'second'") == 0

    provider.released.set()
    assert first.result(timeout=30).status_code == 200
    retried = store.checkout(cart((1, 1)), key="second")
    assert retried.status_code == 200, "the store takes it as soon as there is room"


def test_a_checkout_waits_briefly_for_a_place_rather_than_being_refused(
    hanging: tuple[Store, HangsWhenOpening],
) -> None:
    store, provider = hanging
    first = in_background(store, "first")
    eventually(lambda: provider.waiting, what="the first checkout holding its place")
    second = in_background(store, "second")
    time.sleep(ADMISSION_WAIT_S / 5)
    provider.released.set()  # the first finishes within the second's wait

    assert first.result(timeout=30).status_code == 200
    assert second.result(timeout=30).status_code == 200


def test_healthz_fails_while_work_is_stuck_and_recovers_when_it_moves(
    hanging: tuple[Store, HangsWhenOpening],
) -> None:
    store, provider = hanging
    assert store.http.get("/healthz").status_code == 200
    stuck = in_background(store, "stuck")
    eventually(lambda: provider.waiting, what="a checkout stuck in its start")

    failing = eventually(
        lambda: store.http.get("/healthz"),
        lambda response: response.status_code == 503,
        timeout=10,
        what="/healthz failing",
    )
    assert "not making progress" in failing.json()["detail"]
    assert failing.headers["Retry-After"] == "1"

    provider.released.set()
    assert stuck.result(timeout=30).status_code == 200
    healthy = eventually(
        lambda: store.http.get("/healthz"), lambda r: r.status_code == 200, what="recovery"
    )
    assert healthy.json()["status"] == "ok"
