"""`widget-store node` as a client runs it: JSON lines in, JSON lines out, a real saga behind.

The seed's two sample cases are replayed line for line (on SQLite and PostgreSQL), then
the failure paths, a repeated saga ID, and a node killed with SIGKILL mid-saga whose
restart finishes the saga.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.helpers import Store
from tests.node_process import (
    ORCHESTRATOR,
    SEED_TIMEOUT_S,
    START_S,
    NodeProcess,
    bodies,
    checkout,
    envelope,
    query,
    run_node,
    types,
)

SEED_INIT = '{"src":"c0","dest":"checkout_orchestrator","body":{"type":"init","msg_id":1}}'
SEED_INIT_OK = (
    '{"src": "checkout_orchestrator", "dest": "c0", '
    '"body": {"type": "init_ok", "in_reply_to": 1, "msg_id": 0}}'
)
SEED_HAPPY = (
    '{"src":"c1","dest":"checkout_orchestrator","body":{"type":"checkout","msg_id":2,'
    '"saga_id":"checkout42","user_id":"u42","items":[{"sku":"abc123","quantity":2}],'
    '"shipping_address":"123 Main St"}}'
)
SEED_DECLINED = (
    '{"src":"c1","dest":"checkout_orchestrator","body":{"type":"checkout","msg_id":2,'
    '"saga_id":"checkout43","user_id":"u999","items":[{"sku":"abc123","quantity":2}],'
    '"shipping_address":"123 Main St"}}'
)
COMPLETED = [
    "ReserveInventory",
    "ReserveInventory_ok",
    "ChargePayment",
    "ChargePayment_ok",
    "CreateShipment",
    "CreateShipment_ok",
    "checkout_complete",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def node_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database the node has never seen: a migrated SQLite copy, or an empty PostgreSQL
    database (which the node migrates itself)."""
    if request.param == "sqlite":
        path = tmp_path / "node.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    create: Callable[[], str] = request.getfixturevalue("empty_postgres_databases")
    return create()


@pytest.fixture
def sqlite_database(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "node.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def replay_seed_case(database_url: str, log: Path, checkout_line: str) -> list[dict[str, Any]]:
    """The seed's input, line by line; every output line, the first one as text.

    The node is started and answers init first (start-up takes a few seconds, which the
    seed's timeout does not count); from the checkout on, the seed's 5 s apply.
    """
    node = NodeProcess(database_url, log)
    try:
        node.send(SEED_INIT)
        assert node.next_line(START_S) == SEED_INIT_OK  # the seed's expected output, exactly
        node.send(checkout_line)
        node.close()
        return node.rest(SEED_TIMEOUT_S)
    finally:
        node.stop()


def stock(database_url: str, sku: str) -> int:
    [(inventory,)] = query(database_url, f"SELECT inventory FROM products WHERE sku = '{sku}'")
    return int(inventory)


def orders(database_url: str) -> list[Any]:
    return query(
        database_url,
        "SELECT order_id, checkout_key, status, cancel_reason, total_cents FROM orders",
    )


def test_the_seeds_successful_checkout_runs_every_step(node_database: str, tmp_path: Path) -> None:
    output = replay_seed_case(node_database, tmp_path / "node.log", SEED_HAPPY)

    assert types(output) == COMPLETED
    for number, message in enumerate(output, start=1):  # after init_ok, msg_id 0
        assert message["src"] == ORCHESTRATOR
        assert message["dest"] == "c1"
        assert message["body"]["msg_id"] == number
        assert message["body"]["saga_id"] == "checkout42"
    reserve, reserved, charge, charged, ship, shipped, complete = bodies(output)
    items = [{"sku": "abc123", "quantity": 2}]
    assert reserve == {
        "type": "ReserveInventory", "saga_id": "checkout42", "step": 1, "items": items, "msg_id": 1
    }  # fmt: skip
    [reservation] = reserved["reservations"]
    assert (reserved["step"], reservation["sku"]) == (1, "abc123")
    assert reservation["reservation_id"]
    assert charge == {
        "type": "ChargePayment", "saga_id": "checkout42", "step": 2, "user_id": "u42",
        "amount": 200.0, "msg_id": 3,
    }  # fmt: skip
    assert charged["step"] == 2
    assert charged["payment_id"].startswith("pay_")
    assert charged["transaction_id"].startswith("txn_")
    assert ship == {
        "type": "CreateShipment", "saga_id": "checkout42", "step": 3, "items": items,
        "address": "123 Main St", "msg_id": 5,
    }  # fmt: skip
    assert shipped["step"] == 3
    assert shipped["shipment_id"] and shipped["tracking_number"]
    assert complete["status"] == "COMPLETED"
    assert complete["in_reply_to"] == 2

    [order] = orders(node_database)
    assert complete["order_id"] == f"o{order.order_id}"
    assert (order.checkout_key, order.status, order.total_cents) == (
        "~node/checkout42", "DISPATCHED", 20000
    )  # fmt: skip
    assert stock(node_database, "abc123") == 98
    assert stock(node_database, "xyz789") == 50  # the seed's other SKU is in the catalog too
    [(tracking,)] = query(node_database, "SELECT tracking_number FROM carrier_shipments")
    assert tracking == shipped["tracking_number"]


def test_the_seeds_declined_payment_releases_the_reservation(
    node_database: str, tmp_path: Path
) -> None:
    output = replay_seed_case(node_database, tmp_path / "node.log", SEED_DECLINED)

    assert types(output) == [
        "ReserveInventory",
        "ReserveInventory_ok",
        "ChargePayment",
        "ChargePayment_failed",
        "ReleaseReservation",
        "ReleaseReservation_ok",
        "checkout_failed",
    ]
    _, reserved, _, declined, release, released, failed = bodies(output)
    assert declined == {
        "type": "ChargePayment_failed", "saga_id": "checkout43", "step": 2,
        "error": "insufficient_funds", "decline_code": "DECLINED", "msg_id": 4,
    }  # fmt: skip
    assert release == {
        "type": "ReleaseReservation", "saga_id": "checkout43", "step": 1, "compensating": True,
        "reservations": reserved["reservations"], "msg_id": 5,
    }  # fmt: skip
    assert released == {
        "type": "ReleaseReservation_ok", "saga_id": "checkout43", "step": 1, "msg_id": 6
    }  # fmt: skip
    assert failed == {
        "type": "checkout_failed", "saga_id": "checkout43", "status": "ABORTED",
        "reason": "Payment declined: DECLINED", "in_reply_to": 2, "msg_id": 7,
    }  # fmt: skip

    [order] = orders(node_database)
    assert (order.status, order.cancel_reason) == ("CANCELLED", "Payment declined: DECLINED")
    assert stock(node_database, "abc123") == 100
    [(provider_status,)] = query(node_database, "SELECT status FROM provider_payments")
    assert provider_status == "declined"


def test_bad_lines_get_an_error_each_and_the_node_carries_on(
    sqlite_database: str, tmp_path: Path
) -> None:
    def body(kind: str, msg_id: int, **fields: Any) -> str:
        return envelope("c7", {"type": kind, "msg_id": msg_id, **fields})

    lines: list[str | bytes] = [
        "this is not json",
        "[1, 2]",
        b'{"src": "c7", "dest": "checkout_orchestrator", "body": {"type": "init", "x": "\xff"}}',
        '{"dest": "checkout_orchestrator", "body": {"type": "init", "msg_id": 3}}',
        body("init", -4),
        body("echo", 5, echo="hello"),
        checkout(6, "s-unknown", ("abc123", 1), ("no-such-sku", 1), src="c7"),
        checkout(7, "s-zero", ("abc123", 0), src="c7"),
        body("checkout", 8, saga_id="s-no-items", user_id="u1", shipping_address="1 St"),
        checkout(9, "s-after", ("xyz789", 1), src="c7"),
    ]
    output, code = run_node(sqlite_database, tmp_path / "node.log", lines)

    assert code == 0
    errors = [b for b in bodies(output) if b["type"] == "error"]
    assert [(e.get("in_reply_to"), e["code"]) for e in errors] == [
        (None, 12),  # not JSON
        (None, 12),  # not an object
        (None, 12),  # not UTF-8
        (3, 12),  # no src: answered to nobody, in reply to its msg_id
        (None, 12),  # a negative msg_id
        (5, 10),  # an unknown type
        (6, 20),  # an unknown SKU
        (7, 12),  # a quantity of 0
        (8, 12),  # no items
    ]
    assert all(isinstance(e["text"], str) and e["text"] for e in errors)
    assert "no-such-sku" in errors[6]["text"]
    # Answered as the addressee, to the sender, as far as the line says who they are.
    addresses = [(m["src"], m["dest"]) for m in output if m["body"]["type"] == "error"]
    assert addresses == [(None, None)] * 3 + [(ORCHESTRATOR, None)] + [(ORCHESTRATOR, "c7")] * 5
    assert types(output, "s-after") == COMPLETED  # the node went on after every bad line
    assert [o.checkout_key for o in orders(sqlite_database)] == ["~node/s-after"]


def test_a_repeated_saga_id_is_the_same_saga(sqlite_database: str, tmp_path: Path) -> None:
    first = checkout(2, "again", ("abc123", 1))
    output, _ = run_node(
        sqlite_database,
        tmp_path / "node.log",
        [first, checkout(3, "again", ("abc123", 1), src="c2")],
    )
    # Once through the steps; the repeat is answered with the saga's outcome.
    assert types(output, "again") == [*COMPLETED, "checkout_complete"]
    *_, complete, repeat = [m for m in output if m["body"].get("saga_id") == "again"]
    assert (complete["dest"], complete["body"]["in_reply_to"]) == ("c1", 2)
    assert (repeat["dest"], repeat["body"]["in_reply_to"]) == ("c2", 3)
    assert repeat["body"]["order_id"] == complete["body"]["order_id"]

    # A later run on the same database: still that saga, and a different checkout under
    # its ID is refused.
    later, _ = run_node(
        sqlite_database,
        tmp_path / "node.log",
        [checkout(4, "again", ("abc123", 1)), checkout(5, "again", ("abc123", 3))],
    )
    by_request = {body["in_reply_to"]: body for body in bodies(later)}
    assert sorted(by_request) == [4, 5]
    answer, refusal = by_request[4], by_request[5]
    assert answer["type"] == "checkout_complete"
    assert (answer["order_id"], answer["in_reply_to"]) == (complete["body"]["order_id"], 4)
    assert (refusal["type"], refusal["code"], refusal["in_reply_to"]) == ("error", 22, 5)

    assert len(orders(sqlite_database)) == 1
    assert stock(sqlite_database, "abc123") == 99
    assert query(sqlite_database, "SELECT count(*) FROM provider_payments") == [(1,)]


def test_failures_compensate_newest_first_and_say_so(sqlite_database: str, tmp_path: Path) -> None:
    lines = [
        checkout(2, "no-stock", ("xyz789", 51)),
        checkout(3, "refused", ("abc123", 1), address="1 invalid road"),
        # The first complete_dispatch fails (fault injection): after every protocol step.
        checkout(4, "late", ("abc123", 1)),
    ]
    output, code = run_node(
        sqlite_database, tmp_path / "node.log", lines, "--fail-in", "complete_dispatch", faults=True
    )

    assert code == 0
    no_stock = bodies(output, "no-stock")
    assert [b["type"] for b in no_stock] == [
        "ReserveInventory",
        "ReserveInventory_failed",
        "checkout_failed",
    ]
    assert no_stock[1]["items"] == [{"sku": "xyz789", "requested": 51, "available": 50}]
    assert no_stock[2]["reason"] == "Insufficient inventory: xyz789"

    assert types(output, "refused") == [
        *COMPLETED[:5],
        "CreateShipment_failed",
        "RefundPayment",
        "RefundPayment_ok",
        "ReleaseReservation",
        "ReleaseReservation_ok",
        "checkout_failed",
    ]
    refund = bodies(output, "refused")[6]
    assert refund["compensating"] is True and refund["payment_id"].startswith("pay_")

    late = bodies(output, "late")
    assert [b["type"] for b in late] == [
        *COMPLETED[:6],
        "CancelShipment",
        "CancelShipment_ok",
        "RefundPayment",
        "RefundPayment_ok",
        "ReleaseReservation",
        "ReleaseReservation_ok",
        "checkout_failed",
    ]
    assert late[6]["shipment_id"] == late[5]["shipment_id"]
    assert late[6]["compensating"] is True

    assert {o.checkout_key: o.status for o in orders(sqlite_database)} == {
        "~node/no-stock": "CANCELLED",
        "~node/refused": "CANCELLED",
        "~node/late": "CANCELLED",
    }
    assert (stock(sqlite_database, "abc123"), stock(sqlite_database, "xyz789")) == (100, 50)
    assert sorted(query(sqlite_database, "SELECT status FROM provider_payments")) == [
        ("refunded",),
        ("refunded",),
    ]
    assert query(sqlite_database, "SELECT status FROM carrier_shipments") == [("cancelled",)]


def assert_finished_once(database_url: str) -> None:
    """One order, dispatched; its stock held once, one payment captured, one shipment."""
    [order] = orders(database_url)
    assert order.status == "DISPATCHED"
    assert stock(database_url, "abc123") == 98
    assert query(database_url, "SELECT status FROM provider_payments") == [("captured",)]
    assert query(database_url, "SELECT count(*) FROM carrier_shipments") == [(1,)]


@pytest.mark.postgres
def test_a_node_killed_mid_saga_finishes_it_when_restarted(
    empty_postgres_databases: Callable[[], str], tmp_path: Path
) -> None:
    """On PostgreSQL; the same on SQLite, beside a running store, is the next test."""
    database_url = empty_postgres_databases()
    log = tmp_path / "node.log"
    first, code = run_node(
        database_url,
        log,
        [SEED_INIT, SEED_HAPPY],
        "--crash-after",
        "charge_directly",
        faults=True,
    )
    assert code == -signal.SIGKILL  # killed by SIGKILL, right after the charge's checkpoint
    assert types(first) == ["init_ok", *COMPLETED[:3]]

    second, code = run_node(database_url, log, [SEED_INIT])
    assert code == 0
    resumed = [b for b in bodies(second) if b["type"] != "init_ok"]
    # Only what the first run had not said, and nothing twice.
    assert [b["type"] for b in resumed] == COMPLETED[3:]
    assert resumed[-1]["in_reply_to"] == 2  # still the answer to the checkout that started it
    assert_finished_once(database_url)


def test_the_node_runs_beside_a_store_on_the_same_database(
    sqlite_database: str, tmp_path: Path
) -> None:
    """A node killed with SIGKILL mid-saga, on SQLite, beside a running store: two DBOS
    applications on one database. Neither refuses the other's version, the seed's SKUs
    join the store's catalog, the store's watchdog leaves the node's unfinished order to
    the node, and the node finishes the saga when it starts again."""
    log = tmp_path / "node.log"
    with Store.running(make_settings(sqlite_database, stuck_after_s=0)) as store:
        killed, code = run_node(
            sqlite_database,
            log,
            [SEED_INIT, SEED_HAPPY],
            "--crash-after",
            "charge_directly",
            faults=True,
        )
        assert code == -signal.SIGKILL  # right after the charge's checkpoint
        assert types(killed) == ["init_ok", *COMPLETED[:3]]

        watchdog = store.http.post("/ops/watchdog").json()
        assert (watchdog["checked"], watchdog["resolved"], watchdog["failed"]) == (1, [], [])

        finished, code = run_node(sqlite_database, log, [])
        assert code == 0
        # Only what the first run had not said, and nothing twice.
        assert types(finished) == COMPLETED[3:]
        assert bodies(finished)[-1]["in_reply_to"] == 2
        assert_finished_once(sqlite_database)
        skus = {product["sku"] for product in store.http.get("/products").json()}
        assert {"WID-CLASSIC", "abc123", "xyz789"} <= skus
