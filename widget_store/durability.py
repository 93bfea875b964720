"""The DBOS plumbing: configuration, the step wrapper, the services the steps use, and pace.

This is the one module that may touch DBOS's private modules (`dbos._*`; ruff's
banned-api rule enforces it): the rest of the store uses DBOS's public API only.

- **Configuration.** The system database shares the store's database; its connection
  pool and the store's are sized together (`WIDGET_STORE_DB_POOL_SIZE` per process), so
  several processes fit PostgreSQL's `max_connections`.
- **Steps.** `step(name)` makes an async function a DBOS step checkpointed under a
  `Checkpoint` name, with the fault-injection hooks around it; every step retries
  database connection errors. A step opens its own
  short transaction (`write()`): its SQL is idempotent by construction, so a step that
  committed and crashed before its checkpoint runs again and changes nothing. There are
  no datasource transactions: each would cost two and a half plain steps, for an
  exactly-once guarantee that idempotent SQL does not need.
- **Pace.** DBOS's background loops set an idle app's database traffic, and what
  thousands of waiting checkouts cost; see the constants below.
- **Take-over.** A workflow left PENDING by an earlier application version is run by
  this one only if its workflow name still stands for the same step list.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, Queue, StepOptions
from dbos import _sys_db_postgres as dbos_sys_db_postgres
from dbos import _workflow_commands as dbos_workflow_commands
from dbos._core import WorkflowHandleAsyncTask
from dbos._dbos import _get_dbos_instance, _get_or_create_dbos_registry
from dbos._sys_db import SystemDatabase
from dbos._utils import INTERNAL_QUEUE_NAME
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from widget_store import faults, metrics
from widget_store.admission import Admission, Progress
from widget_store.config import Settings
from widget_store.domain import Undone
from widget_store.logs import log_context
from widget_store.metrics import CompensationResult
from widget_store.news_feed import announcing
from widget_store.payments import DirectCharges, PaymentProvider
from widget_store.shipping import ShippingService
from widget_store.travel import TravelService, TripLeg

P = ParamSpec("P")
R = TypeVar("R")

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
# A LISTEN/NOTIFY wake-up can be lost (PostgreSQL restarting under DBOS's listener), so
# a workflow waiting in recv (a checkout waiting for payment) must look for its message
# again from time to time. DBOS does it per waiter, one query each (every 60 s by
# default: 10,000 waiting checkouts cost 170 queries a second). The store instead looks
# for every waiter of this process in one query per 1,000 (`sweep_missed_wake_ups`),
# and leaves DBOS's own per-waiter look as a backstop an hour apart. A lost wake-up costs
# latency (at most one sweep), never correctness: the verdict is in the order row.
MISSED_WAKEUP_SWEEP_S = 15.0
MISSED_WAKEUP_RECHECK_S = 3600.0
SWEEP_CHUNK = 1000
# DBOS runs its database calls in a thread pool it leaves unbounded: bursts of waiting
# workflows re-checking at once would each add a thread. Bounded, they queue instead.
MAX_THREADS = 32
# Of a process's connection budget, DBOS's system database gets this share; the store's
# engine the rest. DBOS also keeps one connection for LISTEN and one for its sweeps, and
# the store one to hear the other processes' order news (news_feed.py). Half and half
# was tried: at 32 shoppers on two workers a store connection waited 10-60 ms on average
# and a DBOS one about 1 ms, and 8 and 8 gave a purchase p99 of 0.89x in turns; but on
# one worker it cost 1.13x CPU per purchase (bench/results/ab-share-50*.json).
SYSTEM_POOL_SHARE = 0.6
EXTRA_CONNECTIONS = 3


@dataclass(frozen=True)
class Pools:
    """How a process's connections are split between DBOS and the store."""

    system: int
    store: int

    @classmethod
    def of(cls, budget: int) -> Pools:
        system = max(2, math.ceil(budget * SYSTEM_POOL_SHARE))
        return cls(system=system, store=max(2, budget - system))

    @property
    def total(self) -> int:
        """Connections a process may open at most, the three long-lived ones included."""
        return self.system + self.store + EXTRA_CONNECTIONS


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
    else:
        config["sys_db_pool_size"] = Pools.of(settings.db_pool_size).system
        # DBOS pings every system-database connection it takes from its pool, a round
        # trip per operation. Its calls retry a dropped connection by themselves
        # (`db_retry`), so the ping buys nothing but that round trip.
        config["db_engine_kwargs"] = {"pool_pre_ping": False}
    return config


def create_store_engine(settings: Settings) -> AsyncEngine:
    """The store's own engine: a bounded pool on PostgreSQL, write-locking on SQLite."""
    if not settings.database.is_sqlite:
        return create_async_engine(
            settings.database.async_url,
            connect_args={
                "server_settings": {
                    "application_name": settings.database.application_name,
                    **announcing(settings.workers),
                }
            },
            pool_size=Pools.of(settings.db_pool_size).store,
            max_overflow=0,
            # No round trip to test each connection before use: a connection that died
            # with the server fails its statement, SQLAlchemy drops the whole pool, the
            # step retries (`database_blip`) and a route answers 503 with Retry-After.
            pool_pre_ping=False,
            pool_timeout=10,
        )
    engine = create_async_engine(settings.database.async_url, connect_args={"timeout": 30})
    _begin_writes_immediately(engine)
    return engine


WRITES = "widget_store_writes"


def _begin_writes_immediately(engine: AsyncEngine) -> None:
    """On SQLite, a writing transaction takes the write lock when it begins.

    A deferred transaction that reads and then writes cannot wait for the lock: in WAL
    mode, if another writer committed since it read, SQLite fails it at once ("database
    is locked"). BEGIN IMMEDIATE waits, up to the busy timeout, instead.
    """

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get(WRITES, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Deriving an engine with other execution options costs some 30 microseconds, and the
# steps and routes ask for one on every transaction: each is made once per engine.
_DERIVED: weakref.WeakKeyDictionary[AsyncEngine, dict[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)


def _derived(engine: AsyncEngine, kind: str, **options: Any) -> AsyncEngine:
    """`engine.execution_options(**options)`, made the first time `kind` is asked for."""
    made = _DERIVED.setdefault(engine, {})
    if kind not in made:
        made[kind] = engine.execution_options(**options)
    return made[kind]


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, marked so that its transactions begin as writers."""
    return _derived(engine, "writer", **{WRITES: True})


def reading(engine: AsyncEngine) -> AsyncEngine:
    """The same engine for reads that need no transaction: on PostgreSQL in autocommit,
    so that a read is its statements alone, without a BEGIN and a ROLLBACK around them.
    Each statement then sees its own moment: a read that needs one snapshot for several
    tables asks for it in one statement. SQLite keeps its transactions (its BEGIN is
    local, no round trip)."""
    if engine.dialect.name != "postgresql":
        return engine
    return _autocommit(engine)


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    return _derived(engine, "autocommit", isolation_level="AUTOCOMMIT")


# --- the services the steps use ---------------------------------------------------------


@dataclass
class CheckoutServices:
    """What the steps talk to. DBOS workflows and steps are module-level functions, so
    the app installs these once at start-up rather than passing them to every call."""

    engine: AsyncEngine  # the store's database, for the steps' own transactions
    payments: PaymentProvider
    shipping: ShippingService
    payment_timeout_s: float
    dispatch_s: float
    compensation_attempts: int = 8  # failures before a compensation is parked
    dead_letter_retry_s: float = 3600.0  # a parked compensation retries by itself this often
    # What the watchdog needs to tell a live workflow from an orphan.
    app_version: str = ""
    executors: frozenset[str] = frozenset()
    stuck_after_s: float = 120.0
    # How much this process takes on, and whether it moves (widget_store/admission.py).
    admission: Admission = field(default_factory=lambda: Admission(None))
    progress: Progress = field(default_factory=Progress)
    # Direct charges, for `widget-store node`'s checkout (the store's waits for a webhook).
    charges: DirectCharges | None = None
    # The trip saga's car rental, hotel and airline, by the leg each books.
    travel: Mapping[TripLeg, TravelService] = field(default_factory=dict)

    @property
    def writer(self) -> AsyncEngine:
        return writer(self.engine)


_services: CheckoutServices | None = None


def install(services: CheckoutServices) -> None:
    global _services
    _services = services


def services() -> CheckoutServices:
    if _services is None:
        raise RuntimeError("checkout services are not installed; create_app() installs them")
    return _services


_UNWATCHED = Progress()


def _progress() -> Progress:
    return _services.progress if _services is not None else _UNWATCHED


@asynccontextmanager
async def write() -> AsyncIterator[AsyncConnection]:
    """One short transaction on the store's database, for a step's idempotent writes."""
    async with services().writer.begin() as conn:
        yield conn


@asynccontextmanager
async def write_alone() -> AsyncIterator[AsyncConnection]:
    """A connection for a step's write that is one statement, its own transaction.

    On PostgreSQL the connection is in autocommit: the statement commits by itself, one
    round trip where BEGIN, the statement and COMMIT take three. Use it only where each
    statement stands on its own (a second statement would commit apart from the
    first). SQLite keeps its transaction, begun as a writer (its BEGIN is local).
    """
    engine = services().engine
    if engine.dialect.name != "postgresql":
        async with writer(engine).begin() as conn:
            yield conn
    else:
        async with _autocommit(engine).connect() as conn:
            yield conn


# --- steps ----------------------------------------------------------------------------

# Every step retries a lost or refused database connection (PostgreSQL restarting, a
# connection the server ended, SQLite's write lock held past its timeout): 0.5 s, then
# doubling, six attempts in all, about 15 s, which outlasts a database restart. A step is
# idempotent, so running it again after a connection dropped mid-way changes nothing.
DB_RETRY_ATTEMPTS = 6
DB_RETRY_FIRST_S = 0.5
DB_RETRY_BACKOFF = 2.0


# SQLSTATE classes that mean "the database cannot serve this connection now": a lost or
# refused connection (08), too many connections or no resources (53), the server shutting
# down or starting up (57P01-57P03). psycopg raises these as OperationalError; asyncpg's
# errors reach SQLAlchemy as a plain DBAPIError carrying the code.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database is out of reach for now (retry, or answer 503),
    rather than that a statement is wrong."""
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError):
            return True
        code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES)
    # A new connection refused or reset (PostgreSQL restarting): asyncpg raises the
    # socket's error itself, and SQLAlchemy passes it on unwrapped.
    return isinstance(error, ConnectionError)


def database_blip(error: BaseException) -> bool:
    """Whether `error` is the database being unreachable for a moment, not a bug."""
    if database_unavailable(error):
        return True
    return isinstance(error, sa.exc.TimeoutError)  # no pooled connection came free in time


def _retrying_database_blips(options: dict[str, Any]) -> dict[str, Any]:
    """A step's DBOS options, with database connection errors retried too.

    A step that already retries everything keeps its options; one that retries only some
    errors (`should_retry`) retries those and connection errors, on the larger of the two
    budgets; one that retried nothing retries connection errors alone.
    """
    if options.get("retries_allowed") and options.get("should_retry") is None:
        return options
    own: Callable[[BaseException], bool] | None = (
        options.get("should_retry") if options.get("retries_allowed") else None
    )

    def should_retry(error: BaseException) -> bool:
        return database_blip(error) or (own is not None and own(error))

    merged = {**options, "retries_allowed": True, "should_retry": should_retry}
    merged["max_attempts"] = max(options.get("max_attempts", 0), DB_RETRY_ATTEMPTS)
    if own is None:
        merged["interval_seconds"] = DB_RETRY_FIRST_S
        merged["backoff_rate"] = DB_RETRY_BACKOFF
    return merged


def step(
    name: str, *, compensation: str | None = None, **options: Any
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A DBOS step checkpointed as `name`, with the fault-injection hooks around it.

    Its body is timed, logged under the step's name (and the compensation's, for an
    undo, whose outcome is counted too). All of that happens only when the body really
    runs: a step replayed from its checkpoint records nothing again. Called outside a
    workflow (tests, tools), the function simply runs.
    """
    name = str(name)  # a Checkpoint member: its plain text, for DBOS's history and spans
    step_options: StepOptions = {"name": name, **_retrying_database_blips(options)}  # type: ignore[typeddict-item]

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        async def body(*args: P.args, **kwargs: P.kwargs) -> R:
            # Each attempt is work in flight, for the health check; outside an app, none.
            with (
                _progress().working(),
                log_context(step=name, compensation=compensation),
                metrics.step_timer(name),
            ):
                try:
                    faults.fail_now(name)  # inside the step, so DBOS records it
                    result = await fn(*args, **kwargs)
                    faults.lose_answer(name)  # the work is done; its caller cannot tell
                except Exception:
                    if compensation is not None:
                        metrics.compensation_ran(compensation, CompensationResult.FAILED_ATTEMPT)
                    raise
            if compensation is not None and isinstance(result, Undone):
                metrics.compensation_ran(compensation, result.result.value)
            return result

        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            result: R = await DBOS.run_step_async(step_options, body, *args, **kwargs)
            faults.after_step(name)
            return result

        return run

    return decorate


def started_here(handle: object) -> bool:
    """Whether this call created the workflow: DBOS runs it here, in a task, only then
    (starting an ID that exists gives a handle that polls)."""
    return isinstance(handle, WorkflowHandleAsyncTask)


def running_here(handle: object) -> asyncio.Future[Any] | None:
    """The task that runs a workflow this call started in this process (done once it has
    returned, raised, or been cut short); None for a workflow that runs elsewhere."""
    return handle.task if isinstance(handle, WorkflowHandleAsyncTask) else None


def attempt() -> int:
    """Which attempt of the running step this is (0 for the first)."""
    status = DBOS.step_status
    return status.current_attempt if status and status.current_attempt is not None else 0


async def sleep_until(epoch_s: float) -> None:
    """A durable sleep until an absolute time, always checkpointed as one step.

    DBOS skips a sleep of zero seconds without recording it, so a replay that computes
    "no time left" would take one step fewer than the first run did; hence the floor.
    On replay DBOS wakes at the time recorded first, whatever duration is passed.
    """
    await DBOS.sleep_async(max(0.001, epoch_s - time.time()))


# --- pace -----------------------------------------------------------------------------


def pace_dbos_background_work() -> None:
    """Set DBOS's sweep and recheck intervals (read when DBOS launches and waits).

    Both are module and class attributes of DBOS's, not configuration: each is skipped if
    a DBOS release renames it, which only brings back DBOS's default pace.
    """
    if hasattr(dbos_workflow_commands, "_BACKGROUND_JOBS_INTERVAL_SEC"):
        dbos_workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC = background_jobs_interval_s()
    if hasattr(SystemDatabase, "_notification_fallback_polling_interval"):
        SystemDatabase._notification_fallback_polling_interval = MISSED_WAKEUP_RECHECK_S


def wake_receivers_with_messages(chunk: int = SWEEP_CHUNK) -> int:
    """Wake every workflow of this process waiting in recv whose message is already in
    the database (its wake-up was lost); returns how many. Blocking: run it in a thread.

    It does what DBOS's own per-waiter re-check does (set the waiter's event only when an
    unconsumed message for its topic exists, so the woken recv consumes it), for all the
    waiters at once: one query per `chunk` of them instead of one each.
    """
    sys_db = _get_dbos_instance()._sys_db
    signals = {
        (workflow_id, topic): signal
        for _, (workflow_id, topic, _shard), signal in sys_db.notifications_map.snapshot()
    }
    workflow_ids = sorted({workflow_id for workflow_id, _ in signals})
    notifications = sys_db.tables.notifications
    woken = 0
    for start in range(0, len(workflow_ids), chunk):
        with sys_db.engine.connect() as conn:
            found = conn.execute(
                sa.select(notifications.c.destination_uuid, notifications.c.topic)
                .where(notifications.c.destination_uuid.in_(workflow_ids[start : start + chunk]))
                .where(notifications.c.consumed == sa.false())
            ).all()
            conn.rollback()
        for workflow_id, topic in found:
            signal = signals.get((workflow_id, topic))
            if signal is not None:
                signal.set()
                woken += 1
    return woken


async def sweep_missed_wake_ups() -> None:
    """Wake the receivers whose wake-up was lost, every `MISSED_WAKEUP_SWEEP_S` (runs
    until cancelled)."""
    while True:
        await asyncio.sleep(MISSED_WAKEUP_SWEEP_S)
        try:
            woken = await asyncio.to_thread(wake_receivers_with_messages)
        except Exception as error:  # the database away: the next sweep tries again
            DBOS.logger.warning("the sweep for missed wake-ups failed: %r", error)
            continue
        if woken:
            DBOS.logger.info("woke %d workflows whose wake-up was lost", woken)


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


# --- take-over ------------------------------------------------------------------------


ACTIVE = ("PENDING", "ENQUEUED", "DELAYED")


async def take_over(workflow_id: str, app_version: str) -> bool:
    """Carry on a workflow nobody will recover, under this version, from its last step.

    Cancel it (its process is gone), then rewind it to the step after the last one it
    recorded, under `app_version`: DBOS re-queues it, and whichever process of this
    version dequeues it replays its history and continues. Only call this for a
    workflow whose name still stands for the step list it recorded. False if it had
    finished meanwhile.
    """
    status = await DBOS.get_workflow_status_async(workflow_id)
    if status is None or status.status not in (*ACTIVE, "CANCELLED"):
        return False
    if status.status != "CANCELLED":
        await DBOS.cancel_workflow_async(workflow_id)
    steps = await DBOS.list_workflow_steps_async(workflow_id)
    next_step = max((s["function_id"] for s in steps), default=0) + 1
    await DBOS.rewind_workflow_async(
        workflow_id, start_step=next_step, application_version=app_version
    )
    return True
