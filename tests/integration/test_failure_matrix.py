"""The failure matrix: every forward step failed every way, every undo in every outside state.

In process, on SQLite: each case runs one checkout on a fresh store whose simulated
provider and carrier are wrapped to misbehave by name (`Outside`, below), with
the store's own faults armed (`widget_store.faults`). A crash is simulated as DBOS sees
one: right after the step's checkpoint the workflow stops dead (a BaseException, which
no saga code catches and DBOS does not record), the store is shut down, and a new one
on the same database recovers the workflow from its history.

Each case then asserts the order's final status and reason, which compensations ran and
in which order with what words (from the event log), where the provider and carrier
ended, and the invariants every storm checks (`tests/chaos/invariants.py`).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from tests.chaos.invariants import check_invariants, violations
from tests.conftest import make_settings
from tests.helpers import Store, cart, eventually, new_key
from tests.integration.failure_matrix import (
    CANCEL_SHIPMENT,
    CRASHES_IN_COMPENSATION,
    CREATE_PAYMENT,
    CREATE_SHIPMENT,
    FORWARD_CASES,
    FORWARD_STEPS,
    GIVE_BACK,
    PAYMENT_STATES,
    SHIPMENT_STATES,
    STOCK_STATES,
    UNDO_CASES,
    Case,
    Mode,
    OutsideCall,
    Undo,
    UndoCase,
    Verdict,
)
from widget_store import faults
from widget_store.checkpoints import CHECKOUT_CRASH_POINTS
from widget_store.config import Settings
from widget_store.payments import (
    PaymentGivenBack,
    PaymentProvider,
    PaymentProviderUnavailable,
    PaymentRequest,
)
from widget_store.shipping import Cancellation, ShippingService, ShippingUnavailable

R = TypeVar("R")
COMPENSATION_EVENTS = {"CancelShipment", "RefundPayment", "ReleaseReservation", "CancelOrder"}
SETTLE_S = 20.0  # generous: a case that hangs (an undo that never succeeds) fails here
POLL_S = 0.01  # a local SQLite file: reading it often costs little, waiting long adds up


# --- the outside world, faked by name ------------------------------------------------------


class Outside:
    """The simulated provider and carrier, answering each named call as the case says."""

    def __init__(self, url: str, calls: dict[str, OutsideCall]) -> None:
        self.engine = sa.create_engine(url)
        self.calls = calls
        self.seen: dict[str, int] = {}

    def provider(self, real: PaymentProvider) -> PaymentProvider:
        return FakedProvider(self, real)

    def carrier(self, real: ShippingService) -> ShippingService:
        return FakedCarrier(self, real)

    async def answer(
        self,
        name: str,
        keys: dict[str, str],
        down: Callable[[str], Exception],
        work: Callable[[], Awaitable[R]],
    ) -> R:
        self.seen[name] = self.seen.get(name, 0) + 1
        call = self.calls.get(name)
        if call is None:
            return await work()
        if call.first is not None:
            statements, call.first = call.first.format(**keys), None
            await asyncio.to_thread(self._execute, statements)
        if call.fail > 0:
            call.fail -= 1
            raise down(f"{name}: the service is down")
        result = await work()
        if call.lose > 0:
            call.lose -= 1
            raise down(f"{name}: timed out (it happened, but nobody heard)")
        return result

    def _execute(self, statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements.split(";"):
                conn.execute(sa.text(statement))


class FakedProvider:
    def __init__(self, outside: Outside, real: PaymentProvider) -> None:
        self.outside = outside
        self.real = real

    async def create_payment(self, request: PaymentRequest) -> str:
        keys = {"payment_id": request.payment_id}
        return await self.outside.answer(
            CREATE_PAYMENT,
            keys,
            PaymentProviderUnavailable,
            lambda: self.real.create_payment(request),
        )

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        return await self.outside.answer(
            GIVE_BACK,
            {"payment_id": payment_id},
            PaymentProviderUnavailable,
            lambda: self.real.give_back(payment_id, idempotency_key),
        )


class FakedCarrier:
    def __init__(self, outside: Outside, real: ShippingService) -> None:
        self.outside = outside
        self.real = real

    async def create_shipment(self, shipment_key: str, address: str) -> str:
        return await self.outside.answer(
            CREATE_SHIPMENT,
            {"shipment_key": shipment_key},
            ShippingUnavailable,
            lambda: self.real.create_shipment(shipment_key, address),
        )

    async def cancel_shipment(self, shipment_key: str) -> Cancellation:
        return await self.outside.answer(
            CANCEL_SHIPMENT,
            {"shipment_key": shipment_key},
            ShippingUnavailable,
            lambda: self.real.cancel_shipment(shipment_key),
        )


# --- a crash, as DBOS sees one ----------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Stops a workflow dead: no `except Exception` runs, and DBOS records nothing more."""


class Crash:
    """Crashes the workflow once, right after `step`'s checkpoint (or crash point)."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.fired = False

    def after_step(self, step: str) -> None:
        if step == self.step and not self.fired:
            self.fired = True
            raise SimulatedCrash(f"crashed right after {step}")


# --- one case, start to end -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_fault_left_armed() -> Iterator[None]:
    faults.disarm()
    yield
    faults.disarm()


@pytest.fixture
def fresh_sqlite(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "store.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def workflow_status(store: Store, key: str) -> str | None:
    table = "workflow_status" if store.settings.database.is_sqlite else "dbos.workflow_status"
    status: str | None = store.scalar(
        f"SELECT status FROM {table} WHERE workflow_uuid = :key", key=key
    )
    return status


def deliver_verdict(store: Store, case: Case, placed: dict[str, Any]) -> None:
    if case.verdict is Verdict.PAID_ON_PAGE:
        assert store.choose(placed["payment_url"], "pay").status_code == 303
    elif case.verdict is Verdict.DECLINED_ON_PAGE:
        assert store.choose(placed["payment_url"], "decline").status_code == 303
    elif case.verdict is Verdict.PAID_BY_WEBHOOK:
        total = store.order(placed["order_id"])["total_cents"]
        assert store.webhook(placed["payment_id"], "paid", total).status_code == 200


@contextmanager
def _disposing(engine: sa.Engine) -> Iterator[None]:
    try:
        yield
    finally:
        engine.dispose()


def run(case: Case, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings: Settings = make_settings(
        url, payment_timeout_s=case.payment_timeout_s, dispatch_s=0.05
    )
    outside = Outside(settings.database.sync_url, {n: make() for n, make in case.outside.items()})
    for step in case.fail_in:
        faults.arm_failure_in(step)
    for step in case.disconnect_in:
        faults.arm_failure_in(step, disconnect=True)
    for step in case.lose_answer_of:
        faults.arm_lost_answer(step)
    crash = Crash(case.crash_after) if case.crash_after else None
    if crash is not None:
        monkeypatch.setattr(faults, "after_step", crash.after_step)

    def start() -> Store:
        return stack.enter_context(
            Store.running(settings, payments=outside.provider, shipping=outside.carrier)
        )

    with ExitStack() as stack, _disposing(outside.engine):
        store = start()
        if case.out_of_stock:
            assert store.http.post("/restock", json={"inventory": 1}).status_code == 200
        initial = store.stock()
        quantity = 2 if case.out_of_stock else 1
        key = new_key()
        response = store.checkout(cart((1, quantity), address=case.address), key=key)
        assert response.status_code == (409 if case.out_of_stock else 200), response.text
        placed = response.json()
        order_id = placed["order_id"]
        if not case.out_of_stock:
            deliver_verdict(store, case, placed)
        if crash is not None:
            eventually(lambda: crash.fired, every=POLL_S, what=f"the crash after {crash.step}")
            stack.close()  # the process is gone; a new one recovers the workflow
            store = start()
        # The workflow ends after the order does (dispatched, or undone to the last step).
        eventually(
            lambda: workflow_status(store, key),
            lambda status: status == "SUCCESS",
            timeout=SETTLE_S,
            every=POLL_S,
            what="the checkout workflow finishing",
        )
        order = store.order(order_id)
        payment_id = store.scalar("SELECT payment_id FROM orders WHERE order_id = :o", o=order_id)
        fill = {"order_id": order_id, "payment_id": payment_id, "total": order["total_cents"]}

        assert (order["status"], order["cancel_reason"]) == (case.expect_status, case.expect_reason)
        undone = [
            (e["type"], e["detail"]) for e in order["events"] if e["type"] in COMPENSATION_EVENTS
        ]
        expected = [(kind, detail.format(**fill)) for kind, detail in case.expect_undone]
        assert undone == expected, "the compensations that ran, in order, and what each found"
        provider = store.scalar(
            "SELECT status FROM provider_payments WHERE payment_id = :p", p=payment_id
        )
        carrier = store.scalar(
            "SELECT status FROM carrier_shipments WHERE shipment_key = :k", k=f"order-{order_id}"
        )
        assert (provider, carrier) == (case.expect_provider, case.expect_carrier)
        assert violations(check_invariants(settings.database.sync_url, initial)) == []
        assert store.stock() == initial or case.expect_status == "DISPATCHED"


# --- the matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FORWARD_CASES + CRASHES_IN_COMPENSATION, ids=str)
def test_a_checkout_failed_at_any_step_in_any_way_ends_completed_or_fully_undone(
    case: Case, fresh_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(case, fresh_sqlite, monkeypatch)


# On PostgreSQL the steps' writes take other paths (one statement for a status change and
# its log, single statements outside a transaction): the cases where a step runs again
# after its work reached the database, or loses its connection, run there too.
RUN_AGAIN_CASES = [c for c in FORWARD_CASES if c.lose_answer_of or c.disconnect_in]


@pytest.mark.postgres
@pytest.mark.parametrize("case", RUN_AGAIN_CASES, ids=str)
def test_on_postgresql_a_step_run_again_after_its_work_reached_the_database_changes_nothing(
    case: Case, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(case, postgres_url, monkeypatch)


@pytest.mark.parametrize("undo_case", UNDO_CASES, ids=lambda u: str(u.case))
def test_every_compensation_settles_whatever_state_the_outside_is_in(
    undo_case: UndoCase, fresh_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(undo_case.case, fresh_sqlite, monkeypatch)


def test_the_matrix_has_a_case_for_every_step_and_every_way_to_fail() -> None:
    forward = {(case.step, case.mode) for case in FORWARD_CASES if case.step}
    assert forward == {(step, mode) for step in FORWARD_STEPS for mode in Mode}
    crashed = {case.crash_after for case in FORWARD_CASES + CRASHES_IN_COMPENSATION}
    assert set(CHECKOUT_CRASH_POINTS) <= crashed, "every crash point of the saga is tried"


def test_the_matrix_has_a_case_for_every_compensation_in_every_outside_state() -> None:
    covered = {(u.undo, u.state) for u in UNDO_CASES}
    wanted = {
        *((Undo.REFUND_PAYMENT, state) for state in PAYMENT_STATES),
        *((Undo.CANCEL_SHIPMENT, state) for state in SHIPMENT_STATES),
        *((Undo.RELEASE_RESERVATION, state) for state in STOCK_STATES),
    }
    assert wanted <= covered
