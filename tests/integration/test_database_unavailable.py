"""When PostgreSQL cannot serve a connection, a route answers 503 and a step retries.

The store's engine runs on asyncpg, whose errors do not look like psycopg's: a refused
connection is the socket's own error, and a server that ends a session or refuses one for
want of slots raises a plain DBAPIError carrying the SQLSTATE. Each case here is made for
real against the test server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from widget_store.api.errors import install_error_handlers
from widget_store.config import Database
from widget_store.durability import database_blip, database_unavailable

pytestmark = pytest.mark.postgres

caught: dict[str, BaseException] = {}


@pytest.fixture
def limited_role(postgres_url: str) -> Iterator[str]:
    """A login role allowed no connections at all: PostgreSQL refuses it with 53300."""
    name = f"limited_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        sa.make_url(postgres_url).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0"))
    try:
        yield sa.make_url(postgres_url).set(username=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE {name}"))
        admin.dispose()


def app_reaching(url: str, sql: str) -> TestClient:
    """An app with the store's error handlers and one route that runs `sql` at `url`."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/read")
    async def read() -> dict[str, object]:
        engine = create_async_engine(Database.parse(url).async_url, poolclass=sa.pool.NullPool)
        try:
            async with engine.connect() as conn:
                return {"value": (await conn.execute(sa.text(sql))).scalar()}
        except Exception as error:
            caught[sql] = error
            raise
        finally:
            await engine.dispose()

    return TestClient(app, raise_server_exceptions=False)


def assert_unavailable(client: TestClient, sql: str) -> None:
    reply = client.get("/read")
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"] == "1"
    assert reply.json() == {"detail": "the database is unavailable; try again shortly"}
    assert database_unavailable(caught[sql]) and database_blip(caught[sql])


def test_a_refused_connection_is_503_and_a_step_would_retry_it() -> None:
    sql = "SELECT 1 -- refused"
    assert_unavailable(app_reaching("postgresql://postgres@127.0.0.1:1/test", sql), sql)


def test_a_server_out_of_connection_slots_is_503(limited_role: str) -> None:
    sql = "SELECT 1 -- too many"
    assert_unavailable(app_reaching(limited_role, sql), sql)


def test_a_session_the_server_ended_is_503(postgres_url: str) -> None:
    sql = "SELECT pg_terminate_backend(pg_backend_pid())"
    assert_unavailable(app_reaching(postgres_url, sql), sql)


def test_a_wrong_statement_is_still_a_500_and_no_step_retries_it(postgres_url: str) -> None:
    sql = "SELECT no_such_column FROM products"
    reply = app_reaching(postgres_url, sql).get("/read")
    assert reply.status_code == 500
    assert reply.json() == {"detail": "internal error"}
    assert not database_unavailable(caught[sql]) and not database_blip(caught[sql])
