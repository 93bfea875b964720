"""The watchdog resumes or resolves orders that no live workflow drives any more."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from dbos import DBOS

from tests.helpers import Store, cart, eventually, new_key
from widget_store import watchdog
from widget_store.checkpoints import Workflow, node_saga_id
from widget_store.config import Settings
from widget_store.legacy import watchdog_v2 as legacy_watchdog_v2


def run_watchdog(store: Store) -> dict[str, list[int]]:
    response = store.http.post("/ops/watchdog")
    assert response.status_code == 200, response.text
    report: dict[str, list[int]] = response.json()
    return report


def test_a_live_checkout_is_left_alone(settings: Settings) -> None:
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        placed = store.checkout(cart((1, 1))).json()
        report = run_watchdog(store)
        assert report["checked"] == 1
        assert report["resumed"] == report["resolved"] == []
        assert store.order(placed["order_id"])["status"] == "PENDING"


def test_young_orders_are_not_even_looked_at(store: Store) -> None:
    store.checkout(cart((1, 1)))
    assert run_watchdog(store) == {"checked": 0, "resumed": [], "resolved": [], "failed": []}


def test_an_order_a_new_version_finds_in_flight_is_taken_over_at_start_up(
    settings: Settings,
) -> None:
    with Store.running(replace(settings, app_version="1.0.0")) as old_deployment:
        placed = old_deployment.checkout(cart((1, 2))).json()
        stock_held = old_deployment.stock()

    with Store.running(replace(settings, app_version="1.0.1", stuck_after_s=0)) as new:
        assert DBOS.get_workflow_status(placed_key(new, placed)).app_version == "1.0.1"
        assert run_watchdog(new)["resumed"] == [], "nothing left for the watchdog"

        assert new.choose(placed["payment_url"], "pay").status_code == 303
        order = new.wait_for(placed["order_id"])
        assert order["status"] == "DISPATCHED"
        counts = Counter(event["type"] for event in order["events"])
        assert max(counts.values()) == 1, counts
        assert new.stock() == stock_held


def placed_key(store: Store, placed: dict[str, object]) -> str:
    key: str = store.scalar(
        "SELECT checkout_key FROM orders WHERE order_id = :o", o=placed["order_id"]
    )
    return key


def test_an_order_left_on_a_worker_slot_that_is_gone_is_resumed_by_the_watchdog(
    settings: Settings,
) -> None:
    with Store.running(replace(settings, executor_id="widget-store-5", workers=6)) as old:
        placed = old.checkout(cart((1, 2))).json()
        stock_held = old.stock()

    with Store.running(replace(settings, stuck_after_s=0)) as new:
        assert new.order(placed["order_id"])["status"] == "PENDING"
        assert run_watchdog(new)["resumed"] == [placed["order_id"]]

        assert new.choose(placed["payment_url"], "pay").status_code == 303
        order = new.wait_for(placed["order_id"])
        assert order["status"] == "DISPATCHED"
        counts = Counter(event["type"] for event in order["events"])
        assert max(counts.values()) == 1, counts
        assert new.stock() == stock_held
        assert run_watchdog(new)["resumed"] == [], "resumed once"


def test_an_order_whose_workflow_was_cancelled_is_compensated(settings: Settings) -> None:
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        before = store.stock()
        key = new_key()
        placed = store.checkout(cart((3, 5)), key=key).json()
        DBOS.cancel_workflow(key)

        assert run_watchdog(store)["resolved"] == [placed["order_id"]]

        order = store.wait_for(placed["order_id"])
        assert order["status"] == "CANCELLED"
        assert order["cancel_reason"] == "stalled checkout, resolved by the watchdog"
        assert store.stock() == before
        assert run_watchdog(store)["resolved"] == [], "nothing left to resolve"


def test_a_verdict_arriving_after_the_watchdog_undid_the_order_captures_nothing(
    settings: Settings,
) -> None:
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        DBOS.cancel_workflow(key)  # stalled while waiting, its payment still open
        assert run_watchdog(store)["resolved"] == [placed["order_id"]]
        order = store.wait_for(placed["order_id"])
        assert order["status"] == "CANCELLED"

        late = store.webhook(placed["payment_id"], "paid", order["total_cents"])
        page = store.choose(placed["payment_url"], "pay")

        assert late.status_code == 409, late.text
        assert page.status_code == 409, "the provider's page refuses it too"
        money = store.rows(
            "SELECT o.payment_state, p.status FROM orders o JOIN provider_payments p"
            " ON p.payment_id = o.payment_id WHERE o.order_id = :o",
            o=placed["order_id"],
        )
        assert money == [{"payment_state": "voided", "status": "voided"}]
        assert "ChargePayment_ok" not in store.event_types(placed["order_id"])


def test_a_paid_order_whose_workflow_was_cancelled_is_completed(settings: Settings) -> None:
    with Store.running(replace(settings, stuck_after_s=0, dispatch_s=60)) as store:
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        store.choose(placed["payment_url"], "pay")
        store.wait_for(placed["order_id"], "PAID")
        DBOS.cancel_workflow(key)

        assert run_watchdog(store)["resolved"] == [placed["order_id"]]

        order = store.wait_for(placed["order_id"])
        assert order["status"] == "DISPATCHED"
        assert order["tracking_number"]


def test_the_watchdog_runs_on_a_schedule(store: Store) -> None:
    schedule = DBOS.get_schedule("widget-store-watchdog")
    assert schedule is not None
    assert schedule["schedule"] == "0 * * * * *"
    assert schedule["status"] == "ACTIVE"


# --- no checkout can switch the watchdog off (issue 9, item 3) ---------------------------


@pytest.mark.parametrize(
    "key",
    ["~resolve-1", "~resolve%2F1", "%7Eresolve%2F1", "sched-x+00:00", "a/b"],
    ids=["tilde", "tilde-slash", "encoded", "plus", "slash"],
)
def test_a_checkout_key_can_never_be_an_internal_workflow_id(store: Store, key: str) -> None:
    response = store.http.post(f"/checkout/{key}", json=cart((1, 1)))
    assert response.status_code in (404, 422), response.text
    assert store.scalar("SELECT count(*) FROM orders") == 0
    assert DBOS.list_workflows(workflow_ids=["~resolve/1", "~resolve-1"]) == []


def test_checkouts_under_the_old_resolver_ids_cannot_stop_an_order_being_resolved(
    settings: Settings,
) -> None:
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        # A stranger takes "resolve-2" with a cheap checkout that fails for want of stock.
        store.http.post("/restock", json={"inventory": 0})
        squatter = store.checkout(cart((1, 1)), key="resolve-2")
        assert squatter.status_code == 409
        store.http.post("/restock", json={"inventory": 100})
        key = new_key()
        victim = store.checkout(cart((1, 3)), key=key).json()
        assert victim["order_id"] == 2
        DBOS.cancel_workflow(key)  # its workflow ended without ending the order

        report = run_watchdog(store)

        assert report["resolved"] == [2] and report["failed"] == []
        order = store.wait_for(2)
        assert order["status"] == "CANCELLED"
        assert order["cancel_reason"] == "stalled checkout, resolved by the watchdog"
        assert store.stock()[1] == 100, "its stock is back on the shelf"


def strand_under_a_name_this_code_does_not_register(store: Store, key: str) -> None:
    """The order's workflow looks like a future version's, pending on a slot that is gone:
    the watchdog may neither resume it (unknown steps) nor resolve it (it is not over)."""
    DBOS.cancel_workflow(key)
    table = "workflow_status" if store.settings.database.is_sqlite else "dbos.workflow_status"
    store.execute(
        f"UPDATE {table} SET status = 'PENDING', name = 'checkout.v9', "
        "executor_id = 'widget-store-7' WHERE workflow_uuid = :key",
        key=key,
    )


def test_an_order_the_watchdog_cannot_handle_does_not_stop_the_pass(settings: Settings) -> None:
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        troubled_key, stuck_key = new_key(), new_key()
        troubled = store.checkout(cart((1, 1)), key=troubled_key).json()
        stuck = store.checkout(cart((2, 1)), key=stuck_key).json()
        strand_under_a_name_this_code_does_not_register(store, troubled_key)
        DBOS.cancel_workflow(stuck_key)

        first = run_watchdog(store)  # 200: one order's trouble is not the pass's

        assert first["failed"] == [troubled["order_id"]]
        assert first["resolved"] == [stuck["order_id"]]
        assert store.wait_for(stuck["order_id"])["status"] == "CANCELLED"
        second = run_watchdog(store)
        assert second["failed"] == [troubled["order_id"]], "tried again at the next pass"
        assert second["resolved"] == []


def test_the_nodes_orders_are_left_to_the_node(settings: Settings) -> None:
    """`widget-store node` recovers its own sagas: even one whose workflow is gone is not
    the store's to resolve."""
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        key = new_key()
        placed = store.checkout(cart((1, 1)), key=key).json()
        DBOS.cancel_workflow(key)  # without the next line, the watchdog would resolve it
        store.execute(
            "UPDATE orders SET checkout_key = :node WHERE order_id = :order_id",
            node=node_saga_id("s1"),
            order_id=placed["order_id"],
        )

        report = run_watchdog(store)

        assert report == {"checked": 1, "resumed": [], "resolved": [], "failed": []}
        assert store.order(placed["order_id"])["status"] == "PENDING"


# --- a pass reaches every unfinished order, however many wait healthily -------------------


def pass_steps(name: Workflow) -> list[tuple[str, Any]]:
    """The steps of the one watchdog pass of this name, with their outputs."""
    (one,) = DBOS.list_workflows(name=name.value)
    return [(s["function_name"], s["output"]) for s in DBOS.list_workflow_steps(one.workflow_id)]


def test_an_order_stranded_behind_pages_of_waiting_checkouts_is_still_resolved(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchdog, "PAGE", 2)
    with Store.running(replace(settings, stuck_after_s=0)) as store:
        waiting = [store.checkout(cart((1, 1))).json() for _ in range(4)]
        key = new_key()
        stranded = store.checkout(cart((2, 1)), key=key).json()
        DBOS.cancel_workflow(key)

        report = run_watchdog(store)

        assert report["checked"] == 5
        assert report["resolved"] == [stranded["order_id"]]
        assert store.wait_for(stranded["order_id"])["status"] == "CANCELLED"
        assert {store.order(p["order_id"])["status"] for p in waiting} == {"PENDING"}
        pages = [
            out for name, out in pass_steps(Workflow.WATCHDOG) if name == "find_stranded_orders"
        ]
        assert [page.checked for page in pages] == [2, 2, 1]
        assert [len(page.orders) for page in pages] == [0, 0, 1], "live checkouts not recorded"


def test_a_watchdog_pass_of_the_version_before_paging_finishes_under_its_own_steps(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `watchdog.v2` pass cut short after its two steps (a crash, or a deploy of this
    same version) is recovered by DBOS and replays them, then looks after what it read."""
    held = asyncio.Event()

    async def cut_short(*_: object) -> None:
        await held.wait()  # never set: the process stops with the pass PENDING here

    with Store.running(replace(settings, stuck_after_s=0)) as store:
        key = new_key()
        stranded = store.checkout(cart((1, 1)), key=key).json()
        DBOS.cancel_workflow(key)
        with monkeypatch.context() as patched:
            patched.setattr(legacy_watchdog_v2, "look_after_each", cut_short)

            async def start() -> str:
                handle = await DBOS.start_workflow_async(
                    legacy_watchdog_v2.watchdog_v2_workflow, datetime.now(UTC), None
                )
                return handle.workflow_id

            pass_id = store.client.portal.call(start)
            eventually(lambda: len(DBOS.list_workflow_steps(pass_id)) == 2, what="its two steps")

    with Store.running(replace(settings, stuck_after_s=0)) as store:
        report = DBOS.retrieve_workflow(pass_id).get_result()

        assert report.resolved == [stranded["order_id"]]
        assert store.wait_for(stranded["order_id"])["status"] == "CANCELLED"
        names = [s["function_name"] for s in DBOS.list_workflow_steps(pass_id)]
        assert names[:2] == ["find_unfinished_orders", "DBOS.listWorkflows"]
        assert names.count("find_unfinished_orders") == 1, "replayed, not run again"
