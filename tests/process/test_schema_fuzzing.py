"""Schemathesis against the app's own OpenAPI schema: no 5xx, no answer that breaks the schema.

It talks to a real `widget-store serve` over HTTP, every operation but the crash button.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as openapi_checks

from tests.server import ServerProcess, running_server
from widget_store.app import create_app
from widget_store.config import DEMO_WEBHOOK_SECRET, Settings
from widget_store.payments import SIGNATURE_HEADER, sign_webhook

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.response_schema_conformance,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    env = {
        "WIDGET_STORE_DATABASE_URL": f"sqlite:///{folder / 'store.sqlite'}",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "WIDGET_STORE_DISPATCH_S": "0.1",
    }
    with running_server(env, Path(folder) / "server.log") as running:
        yield running


# The schema the app serves at /openapi.json; building it needs no database.
APP_SCHEMA = create_app(Settings.from_env({})).openapi()
# The crash button really kills the server, which is its whole point.
schema = schemathesis.openapi.from_dict(APP_SCHEMA).exclude(path="/crash_application")


def test_the_served_schema_is_the_one_fuzzed(server: ServerProcess) -> None:
    assert server.http.get("/openapi.json").json() == APP_SCHEMA


class SignedLikeTheProvider(requests.auth.AuthBase):
    """Signs every request body as the payment provider would, so webhook cases get past
    the signature check and exercise what lies behind it."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        request.headers[SIGNATURE_HEADER] = sign_webhook(DEMO_WEBHOOK_SECRET, int(time.time()), raw)
        return request


@pytest.fixture(scope="module")
def signed_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = SignedLikeTheProvider()
        yield session


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_keeps_its_contract(server: ServerProcess, case: schemathesis.Case) -> None:
    cap_long_polls(case)
    case.call_and_validate(base_url=server.base_url, checks=CHECKS)


def cap_long_polls(case: schemathesis.Case) -> None:
    """The order long poll may rightly wait up to 30 s; waiting that out for every
    generated example would take minutes, so a valid wait is shortened (still valid)."""
    query = case.query
    if not query or "after_events" not in query:
        return
    try:
        if float(query.get("wait_s", 25)) > 0.2:  # absent: the default wait, 25 s
            query["wait_s"] = 0.2
    except (TypeError, ValueError):
        pass  # not a number: the store answers 422 at once


def test_signed_webhooks_keep_the_contract_too(
    server: ServerProcess, signed_session: requests.Session
) -> None:
    webhooks = schema.include(path_regex="^/payment_webhook/").get_all_operations()
    (webhook,) = [result.ok() for result in webhooks]
    answers: set[int] = set()

    @given(case=webhook.as_strategy())
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def signed_call(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=server.base_url, session=signed_session, checks=CHECKS
        )
        answers.add(response.status_code)

    signed_call()
    assert answers - {401}, f"the signed calls got past the signature check: {answers}"
