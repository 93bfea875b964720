"""The real server with two workers: a scrape answered by either one sums both workers'
counts, and counts survive a worker killed with kill -9."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import PostgresDatabase
from tests.metrics_scrape import parse, value
from tests.server import ServerProcess, running_server

pytestmark = pytest.mark.postgres

HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}
REQUESTS = "widget_store_http_requests_total"


def fresh(server: ServerProcess, path: str) -> httpx.Response:
    # A new connection each time: a kept-alive one would always reach the same worker.
    return httpx.get(server.base_url + path, headers={"Connection": "close"}, timeout=10)


def healthz_count(server: ServerProcess) -> float:
    response = fresh(server, "/metrics")
    assert response.status_code == 200, response.text
    return value(parse(response.text), REQUESTS, **HEALTHZ)


@pytest.fixture
def server(postgres: PostgresDatabase, tmp_path: Path) -> ServerProcess:
    postgres.reset()
    env = {
        "WIDGET_STORE_DATABASE_URL": postgres.url,
        "WIDGET_STORE_WORKERS": "2",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as running:
        yield running  # type: ignore[misc]


def test_a_scrape_of_either_worker_sums_both_workers_counts(server: ServerProcess) -> None:
    before = healthz_count(server)
    answered_by: Counter[int] = Counter()
    while len(answered_by) < 2 and sum(answered_by.values()) < 200:
        answered_by[fresh(server, "/healthz").json()["pid"]] += 1
    assert len(answered_by) == 2, f"one worker answered everything: {answered_by}"
    made = sum(answered_by.values())

    # Several scrapes on fresh connections land on either worker; each sees the sum.
    totals = {healthz_count(server) - before for _ in range(6)}
    assert totals == {made}, f"{answered_by} but scrapes saw {totals}"

    # A worker killed mid-flight leaves its counts behind in the shared folder.
    server.kill_worker()
    assert healthz_count(server) - before >= made
    assert "Traceback" not in server.log(), "the child_exit hook failed"
