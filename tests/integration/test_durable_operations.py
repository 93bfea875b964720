"""What a purchase costs in DBOS operations, counted from DBOS's own tables."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from dbos import DBOS

from tests.helpers import Store, cart, eventually, new_key
from widget_store import queries
from widget_store.config import Settings
from widget_store.payments import PaymentGivenBack, PaymentProvider, PaymentRequest
from widget_store.service import CHECKOUT_RECHECK_S

TARGET = 10  # at most this many durable operations per paid purchase (issue 10)


def test_a_paid_purchase_costs_nine_durable_operations(settings: Settings) -> None:
    with Store.running(replace(settings, dispatch_s=0.2)) as store:
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        total = store.order(placed["order_id"])["total_cents"]
        assert store.webhook(placed["payment_id"], "paid", total).status_code == 200
        store.wait_for(placed["order_id"], "DISPATCHED")
        eventually(lambda: DBOS.get_workflow_status(key), lambda s: s and s.status == "SUCCESS")
        steps = [step["function_name"] for step in DBOS.list_workflow_steps(key)]

    # recv keeps its deadline as a durable timer of its own (the DBOS.sleep after it).
    assert steps == [
        "place_order",
        "DBOS.recv",
        "DBOS.sleep",
        "ship_order",
        "DBOS.sleep",
        "complete_dispatch",
    ]
    start, completion, webhook_send = 1, 1, 1
    operations = start + len(steps) + webhook_send + completion
    assert operations == 9 <= TARGET


def test_a_purchase_whose_dispatch_takes_no_time_skips_the_sleep(settings: Settings) -> None:
    with Store.running(replace(settings, dispatch_s=0.0)) as store:
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        total = store.order(placed["order_id"])["total_cents"]
        store.webhook(placed["payment_id"], "paid", total)
        store.wait_for(placed["order_id"], "DISPATCHED")
        steps = [step["function_name"] for step in DBOS.list_workflow_steps(key)]

    assert steps.count("DBOS.sleep") == 1, steps  # only the payment deadline's timer


def test_a_new_checkout_is_answered_without_reading_its_order_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """place_order knows what it committed, and hands it to the waiting checkout call."""
    reads: list[str] = []
    read_by_key = queries.order_by_key

    async def counted(db: Any, checkout_key: str) -> Any:
        reads.append(checkout_key)
        return await read_by_key(db, checkout_key)

    with Store.running(settings) as store:
        monkeypatch.setattr(queries, "order_by_key", counted)
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        again = store.checkout(cart((1, 1)), key=key).json()  # the same key: read, as before

    assert reads == [key]
    assert placed["status"] == "PENDING" and placed["payment_url"]
    assert placed["order_token"] and placed["order_url"].endswith(placed["order_token"])
    assert again == placed


class SlowToOpen:
    """The provider, taking longer to open a payment than the checkout call's recheck."""

    def __init__(self, provider: PaymentProvider) -> None:
        self.provider = provider

    async def create_payment(self, request: PaymentRequest) -> str:
        await asyncio.sleep(CHECKOUT_RECHECK_S * 3)
        return await self.provider.create_payment(request)

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        return await self.provider.give_back(payment_id, idempotency_key)


def test_a_slow_place_order_is_still_answered_without_reading_its_order_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long its own step takes, the call waits for that step's news: under load
    it used to read the order after the 0.25 s recheck, and find it not yet placed."""
    reads: list[str] = []
    read_by_key = queries.order_by_key

    async def counted(db: Any, checkout_key: str) -> Any:
        reads.append(checkout_key)
        return await read_by_key(db, checkout_key)

    with Store.running(settings, payments=SlowToOpen) as store:
        monkeypatch.setattr(queries, "order_by_key", counted)
        placed = store.checkout(cart((1, 1)), key=new_key()).json()

    assert reads == []
    assert placed["status"] == "PENDING" and placed["payment_url"]
