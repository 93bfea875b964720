"""How the store paces DBOS: quiet when idle, without breaking DBOS's own rules."""

from __future__ import annotations

from dbos import _sys_db_postgres

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
