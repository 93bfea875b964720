"""How the store configures DBOS: its settings, and the pace of its internal queue.

DBOS's background loops set the pace of an idle app's database traffic, and of what
thousands of waiting checkouts cost.

DBOS recovers a crashed process's workflows by re-enqueueing them on its internal queue,
which it polls once a second by default, one database transaction per poll. The store
polls it fast while recovery matters (the first seconds after a start, when a crashed
predecessor's checkouts are waiting) and slowly afterwards, when all that goes through
it is the watchdog's schedule and the rare resumed orphan.
"""

from __future__ import annotations

import asyncio

from dbos import DBOSConfig, Queue
from dbos import _sys_db_postgres as dbos_sys_db_postgres
from dbos import _workflow_commands as dbos_workflow_commands
from dbos._dbos import _get_or_create_dbos_registry
from dbos._sys_db import SystemDatabase
from dbos._utils import INTERNAL_QUEUE_NAME

from widget_store.config import Settings

APP_NAME = "widget-store"
# Without LISTEN/NOTIFY, SQLite hands messages over by polling; DBOS's default of 1 s
# makes one checkout round trip take about 3 s.
SQLITE_POLL_INTERVAL_S = 0.01
RECOVERY_POLL_S = 0.1
RECOVERY_WINDOW_S = 15.0
QUIET_POLL_S = 10.0
# DBOS sweeps for DELAYED workflows and workflow deadlines every second, a transaction or
# three each time; the store uses neither feature, so a slower sweep costs it nothing.
# The sweeping process holds an advisory lock in an open transaction between sweeps, and
# DBOS lets PostgreSQL end that session after 5 s idle: a longer interval would have the
# session killed, and DBOS's whole connection pool rebuilt, at every sweep.
BACKGROUND_JOBS_S = 4.0
# Every workflow waiting in recv (a checkout waiting for payment) re-reads its messages
# this often, in case a LISTEN/NOTIFY wake-up was lost (PostgreSQL restarting). DBOS's
# 60 s makes 10,000 waiting checkouts cost 170 queries a second; at 120 s, half. A lost
# wake-up costs latency, never correctness: the verdict is in the order row.
MISSED_WAKEUP_RECHECK_S = 120.0
# DBOS runs its database calls in a thread pool it leaves unbounded: bursts of waiting
# workflows re-checking at once would each add a thread. Bounded, they queue instead.
MAX_THREADS = 32


def dbos_config(settings: Settings) -> DBOSConfig:
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": settings.database.system_url,
        # Pinned, so that a restart after a code change still recovers in-flight orders.
        "application_version": settings.app_version,
        "executor_id": settings.executor_id,
        "log_level": settings.log_level,
        "max_executor_threads": MAX_THREADS,
    }
    if settings.database.is_sqlite:
        config["notification_listener_polling_interval_sec"] = SQLITE_POLL_INTERVAL_S
    return config


def pace_dbos_background_work() -> None:
    """Set DBOS's sweep and recheck intervals (read when DBOS launches and waits).

    Both are module and class attributes of DBOS's, not configuration: each is skipped if
    a DBOS release renames it, which only brings back DBOS's default pace.
    """
    if hasattr(dbos_workflow_commands, "_BACKGROUND_JOBS_INTERVAL_SEC"):
        dbos_workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC = background_jobs_interval_s()
    if hasattr(SystemDatabase, "_notification_fallback_polling_interval"):
        SystemDatabase._notification_fallback_polling_interval = MISSED_WAKEUP_RECHECK_S


def background_jobs_interval_s() -> float:
    """The sweep interval, kept inside the idle timeout of the sweep lock's session."""
    lock_idle_s = getattr(dbos_sys_db_postgres, "BACKGROUND_JOB_LOCK_IDLE_TIMEOUT_MS", 5000) / 1000
    return min(BACKGROUND_JOBS_S, 0.8 * lock_idle_s)


def internal_queue() -> Queue:
    """DBOS's internal queue, declared before launch so that DBOS uses this object; it
    starts fast, for recovery."""
    queue = _get_or_create_dbos_registry()._register_internal_queue(
        INTERNAL_QUEUE_NAME, polling_interval_sec=RECOVERY_POLL_S
    )
    queue._polling_interval_sec = RECOVERY_POLL_S  # a second app in this process starts fast too
    return queue


async def slow_down_after_recovery(queue: Queue) -> None:
    """Once a start's recovery is over, poll the internal queue at a quiet pace."""
    await asyncio.sleep(RECOVERY_WINDOW_S)
    queue._polling_interval_sec = QUIET_POLL_S
