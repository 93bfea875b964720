"""Production mode: safe defaults refused, the crash button gone, operator actions locked."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest
import sqlalchemy as sa

from tests.helpers import ADMIN_TOKEN, PRODUCTION_WEBHOOK_SECRET, Store
from tests.server import widget_store_command
from widget_store import queries
from widget_store.app import create_app
from widget_store.config import DEMO_WEBHOOK_SECRET, ConfigError, Environment, Settings


def test_production_refuses_to_build_the_app_with_the_demo_secret(settings: Settings) -> None:
    unsafe = replace(settings, env=Environment.PRODUCTION, webhook_secret=DEMO_WEBHOOK_SECRET)
    with pytest.raises(ConfigError, match="demo secret"):
        create_app(replace(unsafe, admin_token=ADMIN_TOKEN))


def test_serve_refuses_to_start_in_production_without_an_admin_token() -> None:
    env = {
        **os.environ,
        "WIDGET_STORE_ENV": "production",
        "WIDGET_STORE_WEBHOOK_SECRET": PRODUCTION_WEBHOOK_SECRET,
        "WIDGET_STORE_ADMIN_TOKEN": "",
    }
    result = subprocess.run(
        [*widget_store_command(), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WIDGET_STORE_ADMIN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_crash_button_does_not_exist_in_production(production: Store) -> None:
    response = production.http.post(
        "/crash_application", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token-wrong-token", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN],
)
def test_restock_needs_the_admin_bearer_token_in_production(
    production: Store, authorization: str | None
) -> None:
    before = production.stock()
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = production.http.post("/restock", json={"inventory": 1}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert ADMIN_TOKEN not in response.text
    assert production.stock() == before


def test_restock_works_with_the_admin_token(production: Store) -> None:
    response = production.http.post(
        "/restock", json={"inventory": 3}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200
    assert set(production.stock().values()) == {3}


def test_the_demo_leaves_operator_actions_open(store: Store) -> None:
    assert store.http.post("/restock", json={"inventory": 5}).status_code == 200


def test_refused_webhooks_are_logged_without_the_secret_or_signature(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "t=1,v1=" + "ab" * 32
    with caplog.at_level("WARNING", logger="widget_store.api"):
        response = store.webhook("pay_x", "paid", 100, signature=forged)
    assert response.status_code == 401
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused webhook /payment_webhook/pay_x/paid" in logged
    assert store.settings.webhook_secret not in logged
    assert "ab" * 32 not in logged


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (sa.exc.ProgrammingError("SELECT secret FROM vault", {}, Exception("syntax")), 500),
        (sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused")), 503),
        (RuntimeError("boom at /work/main/widget_store/queries.py line 3"), 500),
    ],
    ids=["sql-error", "database-down", "bug"],
)
def test_no_sql_or_stack_trace_ever_reaches_a_response(
    store: Store, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(queries, "list_products", broken)
    response = store.http.get("/products")
    assert response.status_code == status
    assert set(response.json()) == {"detail"}
    for leak in ("SELECT", "Traceback", "queries.py", "vault", "boom"):
        assert leak not in response.text
