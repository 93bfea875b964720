"""The simulated provider behaves like a real one: it keeps delivering until the shop answers."""

from __future__ import annotations

import time
from dataclasses import replace

import sqlalchemy as sa

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


def test_opening_a_payment_again_returns_its_first_page_and_opens_no_other(
    settings: Settings,
) -> None:
    import asyncio
    import uuid

    from sqlalchemy.ext.asyncio import create_async_engine

    from widget_store.payments import PaymentRequest
    from widget_store.simulated.provider import SimulatedPaymentProvider

    payment_id = f"pay_{uuid.uuid4().hex[:24]}"
    request = PaymentRequest(payment_id, 7, 1_250, "an order", time.time() + 60, "/order/7")

    async def open_twice() -> tuple[str, str]:
        engine = create_async_engine(settings.database.async_url)
        try:
            provider = SimulatedPaymentProvider(engine, "secret", lambda: None)  # type: ignore[arg-type,return-value]
            first = await provider.create_payment(request)
            again = await provider.create_payment(replace(request, amount_cents=9_999))
            return first, again
        finally:
            await engine.dispose()

    first, again = asyncio.run(open_twice())
    engine = sa.create_engine(settings.database.sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT amount_cents, status FROM provider_payments WHERE payment_id = :p"),
            {"p": payment_id},
        ).all()
    engine.dispose()
    assert first == again and first.startswith("/provider/pay/")
    assert [tuple(row) for row in rows] == [(1_250, "open")], "one payment, as first opened"
