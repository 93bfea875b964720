"""Inputs that once made the real server answer 500 and drop the connection.

Each must get a 4xx with a message, on a connection that then serves the next request:
the server is the real `widget-store serve` in production mode, and each request goes
over one kept-alive HTTP/1.1 connection.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ADMIN_TOKEN, PRODUCTION_WEBHOOK_SECRET, cart, new_key
from tests.server import ServerProcess, running_server
from widget_store.payments import SIGNATURE_HEADER, sign_webhook, webhook_body


@pytest.fixture(scope="module")
def server(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("bad-input")
    database = folder / "store.sqlite"
    shutil.copy(sqlite_template, database)
    env = {
        "WIDGET_STORE_DATABASE_URL": f"sqlite:///{database}",
        "WIDGET_STORE_ENV": "production",
        "WIDGET_STORE_WEBHOOK_SECRET": PRODUCTION_WEBHOOK_SECRET,
        "WIDGET_STORE_ADMIN_TOKEN": ADMIN_TOKEN,
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, folder / "server.log") as running:
        yield running


def _checkout(body: bytes) -> tuple[str, str, bytes, dict[str, str | bytes]]:
    return "POST", f"/checkout/{new_key()}", body, {"Content-Type": "application/json"}


def _webhook(body: bytes, signature: str | bytes) -> tuple[str, str, bytes, dict[str, str | bytes]]:
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature,
    }
    return "POST", "/payment_webhook/pay_x/paid", body, headers


VALID_WEBHOOK = webhook_body("evt_x", "pay_x", "paid", 100)


def bad_request(kind: str) -> tuple[str, str, bytes, dict[str, str | bytes]]:
    """The request, built when the test runs (signatures are only fresh for minutes)."""
    now = int(time.time())
    if kind == "lone-surrogate-address":
        body = json.dumps(cart((1, 1), address="x")).replace('"x"', '"\\ud800"').encode()
        return _checkout(body)
    if kind == "1e400-quantity":
        return _checkout(b'{"items": [{"product_id": 1, "quantity": 1e400}]}')
    if kind == "1e400-inventory":
        headers: dict[str, str | bytes] = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {ADMIN_TOKEN}",
        }
        return "POST", "/restock", b'{"inventory": 1e400}', headers
    if kind == "non-utf8-webhook-body":
        body = b'{"event_id": "\xff\xfe", "payment_id": "pay_x"}'
        return _webhook(body, sign_webhook(PRODUCTION_WEBHOOK_SECRET, now, body))
    if kind == "400-digit-t":
        return _webhook(VALID_WEBHOOK, "t=" + "9" * 400 + ",v1=00")
    if kind == "non-ascii-v1":
        return _webhook(VALID_WEBHOOK, f"t={now},v1=ünïcödé".encode())
    if kind == "non-ascii-bearer-token":
        return "GET", "/orders", b"", {"Authorization": "Bearer tökén-ünïcödé".encode()}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("lone-surrogate-address", 422),
        ("1e400-quantity", 422),
        ("1e400-inventory", 422),
        ("non-utf8-webhook-body", 422),
        ("400-digit-t", 401),
        ("non-ascii-v1", 401),
        ("non-ascii-bearer-token", 401),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message_and_the_connection_stays_usable(
    server: ServerProcess, kind: str, status: int
) -> None:
    method, path, body, headers = bad_request(kind)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())

        assert response.status == status, answer
        assert isinstance(answer["detail"], str) and answer["detail"]
        assert connection.sock is not None, "the server kept the connection open"
        socket_used = connection.sock

        connection.request("GET", "/healthz")
        health = connection.getresponse()
        health.read()
        assert health.status == 200
        assert connection.sock is socket_used, "the next request went over the same connection"
    finally:
        connection.close()
