"""How the store paces DBOS: quiet when idle, without breaking DBOS's own rules, and
without a waiting checkout missing its message."""

from __future__ import annotations

import time

import pytest
from dbos import _dbos, _sys_db_postgres

from tests.conftest import make_settings
from tests.helpers import Store, cart
from widget_store import durability
from widget_store.config import Settings


def test_the_sweep_interval_stays_inside_the_idle_timeout_of_its_lock_session() -> None:
    # The sweeping process holds its lock in an open transaction until the next sweep;
    # past DBOS's idle timeout PostgreSQL ends that session and DBOS rebuilds its pool.
    lock_idle_s = _sys_db_postgres.BACKGROUND_JOB_LOCK_IDLE_TIMEOUT_MS / 1000
    assert 1.0 < durability.background_jobs_interval_s() < lock_idle_s


def test_dbos_threads_are_bounded_and_the_version_is_pinned() -> None:
    settings = Settings.from_env({})
    config = durability.dbos_config(settings)
    assert config.get("max_executor_threads") == durability.MAX_THREADS
    assert config.get("application_version") == settings.app_version
    assert config.get("executor_id") == settings.executor_id


@pytest.mark.postgres
def test_a_checkout_whose_payment_wake_up_was_lost_is_woken_by_the_sweep(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durability, "MISSED_WAKEUP_SWEEP_S", 3600.0)  # swept by hand below
    with Store.running(make_settings(postgres_url)) as store:
        reply = store.checkout(cart((1, 1))).json()
        order_id = reply["order_id"]
        total = store.order(order_id)["total_cents"]
        system = _dbos._get_dbos_instance()._sys_db
        with monkeypatch.context() as lost:  # the message is stored, its NOTIFY never heard
            lost.setattr(system.notifications_map, "get", lambda key: None)
            assert store.webhook(reply["payment_id"], "paid", total).status_code == 200
            time.sleep(1.0)
        assert store.order(order_id)["status"] == "PENDING", "nothing else woke it"

        assert durability.wake_receivers_with_messages() == 1

        assert store.wait_for(order_id, "DISPATCHED")["status"] == "DISPATCHED"
        assert durability.wake_receivers_with_messages() == 0, "its message was consumed"


@pytest.mark.postgres
def test_the_sweep_wakes_only_receivers_with_a_message_waiting(postgres_url: str) -> None:
    with Store.running(make_settings(postgres_url)) as store:
        waiting = [store.checkout(cart((1, 1))).json() for _ in range(3)]

        assert durability.wake_receivers_with_messages(chunk=2) == 0
        time.sleep(0.5)
        assert [store.order(w["order_id"])["status"] for w in waiting] == ["PENDING"] * 3
