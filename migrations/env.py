"""Alembic environment: migrates whichever database the store's settings name."""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from widget_store.config import Settings
from widget_store.schema import metadata
from widget_store.simulated.carrier import carrier_metadata
from widget_store.simulated.provider import provider_metadata
from widget_store.simulated.travel import travel_metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = [metadata, provider_metadata, carrier_metadata, travel_metadata]


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings.from_env().database.sync_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
