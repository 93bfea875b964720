"""The simulated provider behaves like a real one: it keeps delivering until the shop answers."""

from __future__ import annotations

import time
from dataclasses import replace

from tests.helpers import Store, cart, eventually
from widget_store.config import Settings


def decide_behind_the_shops_back(store: Store, payment_id: str, status: str) -> None:
    """The provider committed a decision, then died before delivering the webhook."""
    store.execute(
        "UPDATE provider_payments SET status = :status, event_id = 'evt_lost_in_crash', "
        "decided_at = :decided WHERE payment_id = :payment_id",
        status=status,
        decided=time.time() - 10,
        payment_id=payment_id,
    )


def test_a_decision_whose_webhook_was_lost_is_delivered_again(store: Store) -> None:
    placed = store.checkout(cart((1, 1))).json()
    decide_behind_the_shops_back(store, placed["payment_id"], "captured")

    order = store.wait_for(placed["order_id"], timeout=20)

    assert order["status"] == "DISPATCHED"
    delivered = store.scalar(
        "SELECT delivered FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
    )
    assert delivered


def test_a_payment_the_shop_refuses_as_too_late_is_voided(settings: Settings) -> None:
    with Store.running(replace(settings, payment_timeout_s=1.0)) as store:
        placed = store.checkout(cart((1, 1))).json()
        store.wait_for(placed["order_id"])  # timed out and cancelled
        decide_behind_the_shops_back(store, placed["payment_id"], "captured")

        eventually(
            lambda: store.scalar(
                "SELECT status FROM provider_payments WHERE payment_id = :p",
                p=placed["payment_id"],
            ),
            lambda status: status == "voided",
            what="the shopper getting the money back",
        )
        assert store.order(placed["order_id"])["cancel_reason"] == "payment timed out"


def test_paying_after_the_shop_stopped_waiting_is_refused_by_the_provider(
    settings: Settings,
) -> None:
    with Store.running(replace(settings, payment_timeout_s=1.0)) as store:
        placed = store.checkout(cart((1, 1))).json()
        store.wait_for(placed["order_id"])  # timed out: the saga voided the payment
        response = store.choose(placed["payment_url"], "pay")
        assert response.status_code == 409
        assert "nothing was charged" in response.text
        status = store.scalar(
            "SELECT status FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
        )
        assert status == "voided"


def test_a_payment_past_its_expiry_is_recorded_as_expired(store: Store) -> None:
    placed = store.checkout(cart((1, 1))).json()
    store.execute(
        "UPDATE provider_payments SET expires_at = :past WHERE payment_id = :p",
        past=time.time() - 1,
        p=placed["payment_id"],
    )

    response = store.choose(placed["payment_url"], "pay")
    page = store.http.get(placed["payment_url"])

    assert response.status_code == 409 and "expired" in response.text
    status = store.scalar(
        "SELECT status FROM provider_payments WHERE payment_id = :p", p=placed["payment_id"]
    )
    assert status == "expired", "the refusal does not roll the expiry back"
    assert "This payment is expired" in page.text and "Decline" not in page.text
