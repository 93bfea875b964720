"""Upgrading from version 0.1 under checkouts in flight: each finishes as 0.1 would have.

Version 0.1 is the store as it stood at commit 67e32ed, extracted from this repository's
history and served with this venv. It starts checkouts in every state a checkout can be
in when a deploy happens; the server is then stopped (or killed) and this version started
on the same database, which migrates it, takes the old workflows over and finishes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import Shopper, cart, eventually
from tests.server import ServerProcess
from widget_store.config import DEMO_WEBHOOK_SECRET, PROJECT_ROOT, Database, Settings
from widget_store.payments import SIGNATURE_HEADER, sign_webhook

pytestmark = pytest.mark.postgres

VERSION_0_1 = "67e32ed"
OLD_ENV = {
    "WIDGET_STORE_DISPATCH_S": "8",
    "WIDGET_STORE_PAYMENT_TIMEOUT_S": "300",
    "WIDGET_STORE_COMPENSATION_ATTEMPTS": "3",
    "WIDGET_STORE_FAULT_INJECTION": "1",
    "WIDGET_STORE_LOG_LEVEL": "WARNING",
}
NEW_ENV = {**OLD_ENV, "WIDGET_STORE_DISPATCH_S": "1", "WIDGET_STORE_FAULT_INJECTION": ""}


@pytest.fixture(scope="module")
def version_0_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store's source at version 0.1, out of this repository's history."""
    folder = tmp_path_factory.mktemp("v0.1")
    try:
        archive = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "archive", VERSION_0_1],
            capture_output=True,
            check=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        if os.environ.get("WIDGET_STORE_REQUIRE_POSTGRES"):
            pytest.fail(f"cannot read version 0.1 ({VERSION_0_1}) from git: {error}")
        pytest.skip(f"version 0.1 ({VERSION_0_1}) is not in this checkout's history")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    shutil.rmtree(folder / "tests")  # only the store itself
    return folder


@pytest.fixture
def database(empty_postgres_databases: Callable[[], str]) -> str:
    """An empty database of its own: version 0.1 migrates it to its head, 0.2 to ours."""
    return empty_postgres_databases()


def pay_the_0_1_way(http: httpx.Client, order: dict[str, Any]) -> None:
    """A direct webhook as version 0.1 took it: it signed only the event and the amount."""
    total = http.get(f"/order/{order['order_id']}").json()["total_cents"]
    body = json.dumps({"event_id": f"evt_{uuid.uuid4().hex}", "amount_cents": total}).encode()
    headers = {
        SIGNATURE_HEADER: sign_webhook(DEMO_WEBHOOK_SECRET, int(time.time()), body),
        "Content-Type": "application/json",
    }
    path = f"/payment_webhook/{order['payment_id']}/paid"
    assert http.post(path, content=body, headers=headers).status_code == 200


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(Database.parse(url).sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def place(http: httpx.Client, address: str = "1 Main Street") -> dict[str, Any]:
    response = http.post(f"/checkout/up-{uuid.uuid4().hex}", json=cart((1, 1), address=address))
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def checkouts_in_every_state(old: ServerProcess) -> dict[str, dict[str, Any]]:
    """What version 0.1 is doing when the deploy comes, one checkout per state."""
    http = old.http
    placed: dict[str, dict[str, Any]] = {}
    # Compensating, parked: paid by a direct webhook, refused by the carrier; 0.1 then
    # retried refunding a payment the provider never captured, until it parked it.
    placed["parked"] = place(http, "1 invalid street")
    pay_the_0_1_way(http, placed["parked"])
    eventually(
        lambda: http.get("/ops/dead-letters").json(),
        lambda letters: any(d["order_id"] == placed["parked"]["order_id"] for d in letters),
        timeout=30,
        what="0.1 parking the refund it cannot make",
    )
    # Asleep in its dispatch.
    placed["asleep"] = place(http)
    assert http.post(f"/provider/pay/{placed['asleep']['payment_id']}/pay").status_code == 303
    eventually(
        lambda: http.get(f"/order/{placed['asleep']['order_id']}").json()["status"],
        lambda status: status == "PAID",
    )
    # Waiting for payment: one to be paid after the upgrade, one to be declined.
    placed["to_pay"], placed["to_decline"] = place(http), place(http)
    # Compensating, backing off between attempts: the same refused refund, just begun.
    placed["backing_off"] = place(http, "2 invalid street")
    pay_the_0_1_way(http, placed["backing_off"])
    # Retrying its shipment: the carrier fails four times (0.1's DBOS step retries).
    http.post("/_faults/fail-in/create_shipment", params={"times": 4}).raise_for_status()
    placed["retrying"] = place(http)
    assert http.post(f"/provider/pay/{placed['retrying']['payment_id']}/pay").status_code == 303
    time.sleep(0.8)  # between two of its retries
    return placed


@pytest.mark.parametrize(
    "kill_during_upgrade", [False, True], ids=["restart", "kill-9-mid-upgrade"]
)
def test_checkouts_in_flight_finish_after_an_upgrade_from_version_0_1(
    version_0_1: Path, database: str, tmp_path: Path, kill_during_upgrade: bool
) -> None:
    env = {"WIDGET_STORE_DATABASE_URL": database}
    old = ServerProcess({**env, **OLD_ENV}, tmp_path / "old.log", source=version_0_1)
    old.start()
    old.worker_pid()
    initial = {p["product_id"]: p["inventory"] for p in old.http.get("/products").json()}
    try:
        placed = checkouts_in_every_state(old)
    finally:
        old.kill()  # the deploy: the old version dies where it stands

    new = ServerProcess({**env, **NEW_ENV}, tmp_path / "new.log")
    new.start()
    try:
        pid = new.worker_pid()
        if kill_during_upgrade:
            os.kill(pid, 9)  # in the middle of taking the old workflows over
            new.new_worker_after(pid)
        finish_and_check(new, database, placed, initial)
    finally:
        new.stop()


def finish_and_check(
    new: ServerProcess, database: str, placed: dict[str, dict[str, Any]], initial: dict[int, int]
) -> None:
    """Deliver the verdicts to the new version, retry the parked refund, check the ends."""
    http = new.http
    shopper = Shopper(http, Settings(database=Database.parse(database)))
    to_pay, to_decline = placed["to_pay"], placed["to_decline"]
    page = rows(
        database, "SELECT payment_url FROM orders WHERE order_id = :o", o=to_pay["order_id"]
    )
    assert shopper.choose(page[0].payment_url, "pay").status_code == 303
    total = rows(
        database, "SELECT total_cents FROM orders WHERE order_id = :o", o=to_decline["order_id"]
    )
    declined = shopper.webhook(to_decline["payment_id"], "failed", total[0].total_cents)
    assert declined.status_code == 200, declined.text
    retried: set[int] = set()

    def retry_parked_refunds() -> list[Any]:
        """An operator pressing Retry on whatever is parked; then the orders' states."""
        for letter in http.get("/ops/dead-letters").json():
            if letter["status"] == "parked":
                retry = http.post(f"/ops/dead-letters/{letter['dead_letter_id']}/retry")
                assert retry.status_code in (200, 409), retry.text
                retried.add(letter["order_id"])
        return rows(database, "SELECT status FROM orders")

    eventually(
        retry_parked_refunds,
        lambda orders: all(o.status in ("DISPATCHED", "CANCELLED") for o in orders),
        timeout=90,
        every=0.5,
        what="every order ending",
    )
    assert placed["parked"]["order_id"] in retried

    expected = {
        "to_pay": ("DISPATCHED", None),
        "to_decline": ("CANCELLED", "payment declined"),
        "asleep": ("DISPATCHED", None),
        "retrying": ("DISPATCHED", None),
        "parked": ("CANCELLED", "shipping failed"),
        "backing_off": ("CANCELLED", "shipping failed"),
    }
    for name, (status, reason) in expected.items():
        order_id = placed[name]["order_id"]
        final = rows(
            database, "SELECT status, cancel_reason FROM orders WHERE order_id = :o", o=order_id
        )[0]
        assert (final.status, final.cancel_reason) == (status, reason), name

    # Nothing done twice, nothing stranded.
    for name in expected:
        order_id = placed[name]["order_id"]
        types = [
            r.type
            for r in rows(database, "SELECT type FROM order_events WHERE order_id = :o", o=order_id)
        ]
        repeated = {
            t: n for t, n in Counter(types).items() if n > 1 and not t.startswith("Compensation_")
        }
        assert not repeated, f"{name}: {repeated}"
    shipments = Counter(
        r.shipment_key for r in rows(database, "SELECT shipment_key FROM carrier_shipments")
    )
    assert max(shipments.values()) == 1
    payments = {r.payment_id: r for r in rows(database, "SELECT * FROM provider_payments")}
    for name in ("parked", "backing_off"):
        payment = payments[placed[name]["payment_id"]]
        assert payment.status == "voided", f"{name}: the open payment is voided, never captured"
    assert all(p.refunds <= 1 for p in payments.values())
    held = rows(
        database,
        "SELECT count(*) AS n FROM orders WHERE reservation = 'held' AND status = 'CANCELLED'",
    )
    assert held[0].n == 0
    workflows = rows(
        database,
        "SELECT workflow_uuid, name, status, application_version FROM dbos.workflow_status "
        "WHERE workflow_uuid LIKE 'up-%'",
    )
    assert {w.status for w in workflows} == {"SUCCESS"}, workflows
    assert {w.name for w in workflows} == {"checkout"}, "finished as 0.1's workflow"
    assert {w.application_version for w in workflows} == {"0.2.0"}
    dispatched = sum(1 for status, _ in expected.values() if status == "DISPATCHED")
    stock = {p["product_id"]: p["inventory"] for p in http.get("/products").json()}
    assert stock[1] == initial[1] - dispatched, "what left the shelf is what was dispatched"
