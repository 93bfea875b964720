"""Bring a database's schema to head: DBOS's system tables, then the store's (Alembic)."""

from __future__ import annotations

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


def prepare_sqlite_folder(settings: Settings) -> None:
    if settings.database.is_sqlite and settings.database.url.database:
        Path(settings.database.url.database).parent.mkdir(parents=True, exist_ok=True)


def migrate(settings: Settings) -> None:
    prepare_sqlite_folder(settings)
    DBOS.migrate(settings.database.system_url)
    # The table where DBOS checkpoints the store's own transactions, beside the store's tables.
    SQLAlchemyDatasource.migrate(settings.database.sync_url)
    command.upgrade(alembic_config(settings), "head")
