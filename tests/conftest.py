"""Fixtures: a clean store per test, on the embedded SQLite default and on PostgreSQL.

PostgreSQL tests need WIDGET_STORE_TEST_DATABASE_URL (a server where the role may create
databases). Without it they are skipped, with the reason shown; CI sets it together with
WIDGET_STORE_REQUIRE_POSTGRES=1, which turns a missing URL into an error instead.

Browser tests (tests/browser/) need Debian's Chromium at /usr/bin/chromium, the same way:
skipped without it, an error when WIDGET_STORE_REQUIRE_BROWSER is set (CI sets it).

Broker tests (those taking `nats_server`, marked `broker`) start a private
`nats-server -js` each: skipped without the binary, a failure when
WIDGET_STORE_REQUIRE_BROKER is set (CI sets it).

The alert and Prometheus tests need Debian's `prometheus` package (`prometheus`,
`promtool`): skipped without it, a failure when WIDGET_STORE_REQUIRE_PROMETHEUS is set.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbos import DBOS

from tests.broker import NatsServer, nats_server_binary
from tests.helpers import Store
from widget_store.config import Database, Settings
from widget_store.migrate import migrate
from widget_store.schema import products

PG_URL_VARIABLE = "WIDGET_STORE_TEST_DATABASE_URL"
REQUIRE_PG_VARIABLE = "WIDGET_STORE_REQUIRE_POSTGRES"
REQUIRE_BROWSER_VARIABLE = "WIDGET_STORE_REQUIRE_BROWSER"
REQUIRE_BROKER_VARIABLE = "WIDGET_STORE_REQUIRE_BROKER"
REQUIRE_PROMETHEUS_VARIABLE = "WIDGET_STORE_REQUIRE_PROMETHEUS"
# Where the screenshots test writes: docs/screenshots/ when set, else test-artifacts/.
UPDATE_SCREENSHOTS_VARIABLE = "WIDGET_STORE_UPDATE_SCREENSHOTS"
# Debian's Chromium, driven by Playwright (whose own browser download cannot work here).
CHROMIUM = Path("/usr/bin/chromium")
STORE_TABLES = [
    "dead_letters",
    "trip_events",
    "trips",
    "travel_bookings",
    "order_events",
    "order_items",
    "orders",
    "provider_payments",
    "carrier_shipments",
    "outbox",
    "outbox_sequences",
    "webhook_events",
]


# Every test's layer is the folder it lives in; the marker follows, so none can be forgotten.
LAYER_MARKERS = {
    "unit": ("unit",),
    "integration": ("integration",),
    "process": ("process",),
    "browser": ("browser", "process"),
    "chaos": ("chaos", "process", "postgres"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        layer = item.path.relative_to(tests_dir).parts[0]
        for marker in LAYER_MARKERS.get(layer, ()):
            item.add_marker(marker)
        if "nats_server" in getattr(item, "fixturenames", ()):
            item.add_marker("broker")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(REQUIRE_PG_VARIABLE) and not os.environ.get(PG_URL_VARIABLE):
        raise pytest.UsageError(
            f"{REQUIRE_PG_VARIABLE} is set, so PostgreSQL tests must run, "
            f"but {PG_URL_VARIABLE} is not set"
        )
    if os.environ.get(REQUIRE_BROWSER_VARIABLE) and not CHROMIUM.exists():
        raise pytest.UsageError(
            f"{REQUIRE_BROWSER_VARIABLE} is set, so browser tests must run, "
            f"but there is no Chromium at {CHROMIUM} (apt-get install chromium)"
        )


EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run when it is over, even if a thread is still working.

    A workflow's database call may still be running in one of DBOS's worker threads
    when its test's app shuts down; once the test database is dropped, DBOS retries that
    call with backoff for ever, and Python waits for the thread at exit, so the run
    would never end. The results are in by now: say which threads are left, and exit
    with the run's status without waiting for them.
    """
    left = [
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    if left and EXIT_STATUS in config.stash:
        print(
            f"\n{len(left)} thread(s) still running at the end of the tests "
            f"({', '.join(left[:5])}): exiting without waiting for them",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[EXIT_STATUS])


def make_settings(url: str, **overrides: object) -> Settings:
    base = Settings(
        database=Database.parse(url),
        payment_timeout_s=60.0,
        dispatch_s=0.2,
        provider_redeliver_s=0.5,
        log_level="WARNING",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, which is faster than migrating."""
    path = tmp_path_factory.mktemp("template") / "store.sqlite"
    migrate(make_settings(f"sqlite:///{path}"))
    return path


class PostgresDatabase:
    """A throwaway database on the test server, migrated once, reset before each test."""

    def __init__(self, server_url: str) -> None:
        server = sa.make_url(server_url).set(drivername="postgresql+psycopg")
        self.name = f"widget_store_test_{uuid.uuid4().hex[:10]}"
        self._admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = server.set(database=self.name, drivername="postgresql").render_as_string(
            hide_password=False
        )
        migrate(make_settings(self.url))
        # DBOS's reset ends other sessions on the database, so hold no pooled connection.
        self._engine = sa.create_engine(
            Database.parse(self.url).sync_url, poolclass=sa.pool.NullPool
        )
        with self._engine.connect() as conn:
            self._catalog = [dict(row._mapping) for row in conn.execute(sa.select(products))]

    def reset(self) -> None:
        DBOS.reset_system_database(system_database_url=self.url, truncate=True)
        with self._engine.begin() as conn:
            tables = ", ".join([*STORE_TABLES, "products", "dbos.datasource_outputs"])
            conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            conn.execute(sa.insert(products), self._catalog)

    def drop(self) -> None:
        self._engine.dispose()
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    server_url = os.environ.get(PG_URL_VARIABLE)
    if not server_url:
        pytest.skip(f"{PG_URL_VARIABLE} is not set; CI sets it (see README)")
    database = PostgresDatabase(server_url)
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated, seeded database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    postgres: PostgresDatabase = request.getfixturevalue("postgres")
    postgres.reset()
    return postgres.url


@pytest.fixture
def postgres_url(postgres: PostgresDatabase) -> str:
    """A clean, migrated, seeded database on PostgreSQL only (for tests of its locks)."""
    postgres.reset()
    return postgres.url


@pytest.fixture
def empty_postgres_databases(postgres: PostgresDatabase) -> Iterator[Callable[[], str]]:
    """Makes empty databases on the test server (for stores that migrate them themselves,
    or several stores side by side); drops them afterwards."""
    server = sa.make_url(postgres.url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def create() -> str:
        name = f"widget_store_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return server.set(database=name, drivername="postgresql").render_as_string(False)

    try:
        yield create
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.running(settings) as running:
        yield running


@pytest.fixture
def postgres_server_binaries() -> None:
    """The chaos and benchmark runs build private PostgreSQL clusters: they need `initdb`
    and `pg_ctl`. Required in CI (WIDGET_STORE_REQUIRE_POSTGRES), skipped elsewhere."""
    if shutil.which("pg_ctl") or any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        return
    if os.environ.get("WIDGET_STORE_REQUIRE_POSTGRES"):
        pytest.fail("this test needs PostgreSQL's server binaries (initdb, pg_ctl)")
    pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private NATS server with JetStream on a free port, its store in tmp_path."""
    binary = nats_server_binary()
    if binary is None:
        message = "nats-server is not installed (apt-get install nats-server)"
        if os.environ.get(REQUIRE_BROKER_VARIABLE):
            pytest.fail(f"{REQUIRE_BROKER_VARIABLE} is set, so broker tests must run: {message}")
        pytest.skip(message)
    server = NatsServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass(frozen=True)
class PrometheusBinaries:
    prometheus: Path
    promtool: Path


@pytest.fixture
def prometheus_binaries() -> PrometheusBinaries:
    """Debian's `prometheus` package. Required in CI (WIDGET_STORE_REQUIRE_PROMETHEUS),
    skipped elsewhere."""
    found = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    if all(found.values()):
        return PrometheusBinaries(Path(found["prometheus"] or ""), Path(found["promtool"] or ""))
    missing = ", ".join(name for name, path in found.items() if not path)
    if os.environ.get(REQUIRE_PROMETHEUS_VARIABLE):
        pytest.fail(f"{REQUIRE_PROMETHEUS_VARIABLE} is set, but not installed: {missing}")
    pytest.skip(f"not installed: {missing} (apt-get install prometheus)")
