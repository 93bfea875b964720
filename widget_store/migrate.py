"""Bring a database's schema to head: DBOS's system tables, then the store's (Alembic)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from dbos import DBOS, SQLAlchemyDatasource

from widget_store.config import PROJECT_ROOT, Settings

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(settings: Settings) -> Config:
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(
            f"{ALEMBIC_INI} is missing: run the store from a checkout (pip install -e .)"
        )
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", settings.database.sync_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def prepare_sqlite(settings: Settings) -> None:
    """Create the embedded database's folder, and put the file in write-ahead-log mode.

    In SQLite's default rollback-journal mode a writer locks out every reader, and
    concurrent checkouts fail with "database is locked"; in WAL mode readers carry on
    while one writer writes. The mode is stored in the file, so setting it once is enough.
    Durability is unchanged: every commit is still synced before it returns.
    """
    if not (settings.database.is_sqlite and settings.database.url.database):
        return
    path = Path(settings.database.url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def migrate(settings: Settings) -> None:
    prepare_sqlite(settings)
    DBOS.migrate(settings.database.system_url)
    # The table where DBOS checkpoints the store's own transactions, beside the store's tables.
    SQLAlchemyDatasource.migrate(settings.database.sync_url)
    command.upgrade(alembic_config(settings), "head")
