"""The payment webhook: signed, fresh, once per event, and only while the payment is open."""

from __future__ import annotations

import time
from typing import Any

import pytest
from dbos import DBOS

from tests.helpers import Placed, Store, cart, new_key
from widget_store.payments import webhook_body


def open_checkout(store: Store) -> Placed:
    reply = store.checkout(cart((1, 1))).json()
    total = store.order(reply["order_id"])["total_cents"]
    return Placed(reply["order_id"], reply["payment_id"], total, reply["payment_url"])


def assert_nothing_changed(store: Store, placed: Placed) -> None:
    order = store.order(placed.order_id)
    assert order["status"] == "PENDING"
    assert order["payment_verdict"] == "awaiting"


@pytest.mark.parametrize(
    "tamper",
    ["unsigned", "wrong-secret", "stale", "future", "body-swapped"],
)
def test_unsigned_forged_or_stale_webhooks_get_401_and_change_nothing(
    store: Store, tamper: str
) -> None:
    placed = open_checkout(store)
    kwargs: dict[str, Any] = {
        "unsigned": {"signature": ""},
        "wrong-secret": {"secret": "whsec_attacker"},
        "stale": {"timestamp": int(time.time()) - 301},
        "future": {"timestamp": int(time.time()) + 301},
        "body-swapped": {"signature": store_signature_for_other_body(store)},
    }[tamper]

    response = store.webhook(placed.payment_id, "paid", placed.total, **kwargs)

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid or missing webhook signature"}
    assert_nothing_changed(store, placed)


def store_signature_for_other_body(store: Store) -> str:
    from widget_store.payments import sign_webhook

    return sign_webhook(store.settings.webhook_secret, int(time.time()), b'{"other": 1}')


def test_the_signature_is_checked_before_the_payment_is_looked_up(store: Store) -> None:
    unsigned = store.webhook("pay_does_not_exist", "paid", 100, signature="")
    signed = store.webhook("pay_does_not_exist", "paid", 100)
    assert unsigned.status_code == 401
    assert signed.status_code == 404
    assert "unknown payment" in signed.json()["detail"]


def test_an_unknown_payment_status_is_422(store: Store) -> None:
    placed = open_checkout(store)
    response = store.webhook(placed.payment_id, "refunded", placed.total)
    assert response.status_code == 422
    assert_nothing_changed(store, placed)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"event_id": "e"}', b'{"event_id": 5, "amount_cents": 100}', b"[]"],
    ids=["malformed", "missing-amount", "wrong-type", "not-an-object"],
)
def test_a_signed_but_malformed_body_is_422(store: Store, body: bytes) -> None:
    placed = open_checkout(store)
    response = store.webhook(placed.payment_id, "paid", 0, body=body)
    assert response.status_code == 422
    assert_nothing_changed(store, placed)


def test_an_amount_other_than_the_total_is_400(store: Store) -> None:
    placed = open_checkout(store)
    response = store.webhook(placed.payment_id, "paid", placed.total + 1)
    assert response.status_code == 400
    assert "does not match" in response.json()["detail"]
    assert_nothing_changed(store, placed)


def test_the_same_event_delivered_twice_has_the_effect_of_one(store: Store) -> None:
    placed = open_checkout(store)
    first = store.webhook(placed.payment_id, "paid", placed.total, event_id="evt_same")
    second = store.webhook(placed.payment_id, "paid", placed.total, event_id="evt_same")

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    order = store.wait_for(placed.order_id)
    assert order["status"] == "DISPATCHED"
    assert store.event_types(placed.order_id).count("ChargePayment_ok") == 1


def messages_for(store: Store, workflow_id: str) -> int:
    table = "notifications" if store.settings.database.is_sqlite else "dbos.notifications"
    count: int = store.scalar(
        f"SELECT count(*) FROM {table} WHERE destination_uuid = :w", w=workflow_id
    )
    return count


def test_a_redelivered_event_wakes_the_checkout_with_one_message_only(store: Store) -> None:
    key = new_key()
    reply = store.checkout(cart((1, 1)), key=key).json()
    total = store.order(reply["order_id"])["total_cents"]
    DBOS.cancel_workflow(key)  # nobody reads the messages now: they stay to be counted

    for _delivery in range(3):
        response = store.webhook(reply["payment_id"], "paid", total, event_id="evt_thrice")
        assert response.status_code == 200

    assert messages_for(store, key) == 1


def test_a_second_verdict_for_a_decided_payment_is_409_with_the_order_state(
    store: Store,
) -> None:
    placed = open_checkout(store)
    store.webhook(placed.payment_id, "failed", placed.total)
    store.wait_for(placed.order_id)

    late = store.webhook(placed.payment_id, "paid", placed.total)

    assert late.status_code == 409
    body = late.json()
    assert "already decided" in body["detail"]
    assert body["order"]["status"] == "CANCELLED"
    assert body["order"]["cancel_reason"] == "payment declined"
    assert store.order(placed.order_id)["payment_verdict"] == "failed"


def test_a_webhook_after_the_deadline_is_409_even_before_the_saga_notices(
    store: Store,
) -> None:
    placed = open_checkout(store)
    # Move the deadline into the past behind the saga's back: the workflow is still
    # asleep in recv, but the verdict is no longer the webhook's to give.
    store.execute("UPDATE orders SET payment_deadline = :past", past="2000-01-01 00:00:00")
    response = store.webhook(placed.payment_id, "paid", placed.total)
    assert response.status_code == 409
    assert "deadline has passed" in response.json()["detail"]
    assert response.json()["order"]["payment_verdict"] == "awaiting"


def test_the_providers_pay_button_delivers_a_signed_webhook(store: Store) -> None:
    placed = open_checkout(store)
    page = store.http.get(placed.payment_url)
    assert page.status_code == 200
    assert "Pay" in page.text and "Decline" in page.text

    response = store.choose(placed.payment_url, "pay")

    assert response.status_code == 303
    token = store.scalar("SELECT access_token FROM orders WHERE order_id = :o", o=placed.order_id)
    assert response.headers["location"] == f"/order.html?order_id={placed.order_id}&token={token}"
    assert store.wait_for(placed.order_id)["status"] == "DISPATCHED"
    again = store.choose(placed.payment_url, "decline")
    assert again.status_code == 409, "a provider does not decline what it captured"


# --- what a captured webhook lets a stranger do: exactly what its body says, no more ------


def test_a_signed_body_for_another_payment_is_refused(store: Store) -> None:
    victim, other = open_checkout(store), open_checkout(store)
    body = webhook_body("evt_for_other", other.payment_id, "paid", victim.total)

    response = store.webhook(victim.payment_id, "paid", victim.total, body=body)

    assert response.status_code == 400
    assert "another payment or verdict" in response.json()["detail"]
    assert_nothing_changed(store, victim)
    assert_nothing_changed(store, other)


def test_a_captured_decline_cannot_be_replayed_as_a_payment(store: Store) -> None:
    placed = open_checkout(store)
    decline = webhook_body("evt_decline", placed.payment_id, "failed", placed.total)

    replayed = store.webhook(placed.payment_id, "paid", placed.total, body=decline)

    assert replayed.status_code == 400
    assert_nothing_changed(store, placed)


def test_an_event_seen_for_one_payment_is_refused_for_any_other(store: Store) -> None:
    first, second = open_checkout(store), open_checkout(store)
    assert (
        store.webhook(first.payment_id, "failed", first.total, event_id="evt_1").status_code == 200
    )

    reused = store.webhook(second.payment_id, "failed", second.total, event_id="evt_1")

    assert reused.status_code == 400
    assert "already used for another payment" in reused.json()["detail"]
    assert_nothing_changed(store, second)


def test_a_body_that_is_not_utf8_is_a_clear_4xx(store: Store) -> None:
    placed = open_checkout(store)
    response = store.webhook(
        placed.payment_id, "paid", placed.total, body=b'{"event_id": "\xff\xfe"}'
    )
    assert response.status_code == 422
    assert response.json()["detail"]
    assert_nothing_changed(store, placed)
