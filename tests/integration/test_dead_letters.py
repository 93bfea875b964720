"""A compensation that keeps failing is parked where operators see it, and retried on request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.helpers import Store, cart, eventually
from widget_store.config import Settings
from widget_store.payments import (
    PaymentGivenBack,
    PaymentProvider,
    PaymentProviderUnavailable,
    PaymentRequest,
)


class RefundsDown:
    """The provider, with its refund endpoint down until `down` is cleared."""

    def __init__(self, provider: PaymentProvider) -> None:
        self.provider = provider
        self.down = True

    async def create_payment(self, request: PaymentRequest) -> str:
        return await self.provider.create_payment(request)

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        if self.down:
            raise PaymentProviderUnavailable("the refund endpoint is down")
        return await self.provider.give_back(payment_id, idempotency_key)


@pytest.fixture
def broken_refunds(settings: Settings) -> Iterator[tuple[Store, RefundsDown]]:
    adapters: list[RefundsDown] = []

    def wrap(provider: PaymentProvider) -> PaymentProvider:
        adapters.append(RefundsDown(provider))
        return adapters[-1]

    quick = replace(settings, compensation_attempts=2, dead_letter_retry_s=600)
    with Store.running(quick, payments=wrap) as store:
        yield store, adapters[0]


def parked(store: Store) -> list[dict[str, object]]:
    response = store.http.get("/ops/dead-letters")
    assert response.status_code == 200
    return [d for d in response.json() if d["status"] == "parked"]


def wait_until_parked(store: Store, attempts: int) -> dict[str, object]:
    letters = eventually(
        lambda: [d for d in parked(store) if d["attempts"] == attempts],
        what=f"a compensation parked after {attempts} attempts",
    )
    return letters[0]


def test_a_refund_that_keeps_failing_is_parked_and_retried_by_an_operator(
    broken_refunds: tuple[Store, RefundsDown],
) -> None:
    store, refunds = broken_refunds
    before = store.stock()
    placed = store.checkout(cart((2, 1), address="9 invalid way")).json()
    store.choose(placed["payment_url"], "pay")

    letter = wait_until_parked(store, attempts=2)
    assert letter["compensation"] == "RefundPayment"
    assert "refund endpoint is down" in str(letter["last_error"])
    assert letter["order_id"] == placed["order_id"]
    order = store.order(placed["order_id"])
    assert order["status"] == "PENDING", "not cancelled while money is still held"
    assert "Compensation_parked" in store.event_types(placed["order_id"])

    # Retrying while the provider is still down parks it again, with the attempts counted.
    retry = store.http.post(f"/ops/dead-letters/{letter['dead_letter_id']}/retry")
    assert retry.status_code == 200
    wait_until_parked(store, attempts=4)

    refunds.down = False
    assert store.http.post(f"/ops/dead-letters/{letter['dead_letter_id']}/retry").status_code == 200

    final = store.wait_for(placed["order_id"])
    assert final["status"] == "CANCELLED"
    assert final["cancel_reason"] == "shipping failed"
    assert store.stock() == before
    assert parked(store) == []
    events = store.event_types(placed["order_id"])
    assert events.count("RefundPayment") == 1
    assert events[-4:] == ["RefundPayment", "ReleaseReservation", "CancelOrder", "checkout_failed"]
    refunded = store.scalar(
        "SELECT refunds FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
    )
    assert refunded == 1
    again = store.http.post(f"/ops/dead-letters/{letter['dead_letter_id']}/retry")
    assert again.status_code == 409


def test_retrying_an_unknown_dead_letter_is_404(store: Store) -> None:
    response = store.http.post("/ops/dead-letters/999/retry")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown dead letter 999"}
