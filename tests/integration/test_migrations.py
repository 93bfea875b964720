"""`widget-store migrate` and `dbos migrate` bring an empty database to head, seeded."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from tests.server import widget_store_command
from widget_store.config import PROJECT_ROOT, Database, Settings
from widget_store.migrate import alembic_config, migrate

STORE_TABLES = {"products", "orders", "order_items", "order_events"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    server_url = os.environ.get("WIDGET_STORE_TEST_DATABASE_URL")
    if not server_url:
        pytest.skip("WIDGET_STORE_TEST_DATABASE_URL is not set")
    server = sa.make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"widget_store_empty_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name, drivername="postgresql").render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def catalog(url: str) -> list[dict[str, object]]:
    engine = sa.create_engine(Database.parse(url).sync_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM products ORDER BY product_id"))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sa.create_engine(Database.parse(url).sync_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def run_cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    # As a user with the venv activated: dbos-config.yaml calls `widget-store migrate`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "WIDGET_STORE_DATABASE_URL": url}
    return subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_widget_store_migrate_creates_the_schema_and_seeds_a_catalog(empty_database: str) -> None:
    result = run_cli([*widget_store_command(), "migrate"], empty_database)
    assert result.returncode == 0, result.stderr

    assert tables(empty_database) >= STORE_TABLES
    products = catalog(empty_database)
    assert len(products) >= 3
    for product in products:
        assert product["sku"] and product["name"] and product["description"]
        assert product["price_cents"] > 0 and product["inventory"] > 0  # type: ignore[operator]

    again = run_cli([*widget_store_command(), "migrate"], empty_database)
    assert again.returncode == 0, again.stderr
    assert catalog(empty_database) == products, "migrating twice changes nothing"


def test_dbos_migrate_runs_the_same_migrations_through_dbos_config(empty_database: str) -> None:
    dbos = Path(sys.executable).with_name("dbos")
    result = run_cli([str(dbos), "migrate"], empty_database)
    assert result.returncode == 0, result.stdout + result.stderr

    assert tables(empty_database) >= STORE_TABLES
    assert len(catalog(empty_database)) >= 3


def test_the_schema_downgrades_and_upgrades_cleanly(empty_database: str) -> None:
    settings = Settings(database=Database.parse(empty_database))
    migrate(settings)
    command.downgrade(alembic_config(settings), "base")
    assert not STORE_TABLES & tables(empty_database)
    command.upgrade(alembic_config(settings), "head")
    assert tables(empty_database) >= STORE_TABLES


def test_the_embedded_database_keeps_a_write_ahead_log_so_readers_never_block(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    migrate(Settings.from_env({"WIDGET_STORE_DATABASE_URL": url}))

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()
