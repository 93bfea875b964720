"""A real Prometheus (Debian's package) scrapes a real two-worker store while shoppers buy
and decline; its HTTP API then has the counters the store should have counted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import PostgresDatabase, PrometheusBinaries
from tests.helpers import Shopper, cart, eventually
from tests.server import ServerProcess, free_port, running_server
from widget_store.config import PROJECT_ROOT, Database, Settings

pytestmark = pytest.mark.postgres

ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"


class PrometheusServer:
    """Prometheus on a private port with its own storage, scraping one target each second."""

    def __init__(self, binaries: PrometheusBinaries, target: str, folder: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "widget-store", "static_configs": [{"targets": [target]}]}
            ],
        }
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log_path = folder / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(binaries.prometheus),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            try:
                return self.http.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False  # not listening yet

        eventually(ready, timeout=timeout, every=0.25, what=lambda: f"ready:\n{self.log()}")

    def query(self, expression: str) -> float | None:
        """An instant query's single value (None while it has no result)."""
        reply = self.http.get("/api/v1/query", params={"query": expression}).json()
        assert reply["status"] == "success", reply
        result = reply["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def api(self, path: str) -> Any:
        reply = self.http.get(path).json()
        assert reply["status"] == "success", reply
        return reply["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def store_server(postgres: PostgresDatabase, tmp_path: Path) -> Iterator[ServerProcess]:
    postgres.reset()
    env = {
        "WIDGET_STORE_DATABASE_URL": postgres.url,
        "WIDGET_STORE_WORKERS": "2",
        "WIDGET_STORE_DISPATCH_S": "0.2",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as running:
        yield running


@pytest.fixture
def prometheus(
    prometheus_binaries: PrometheusBinaries, store_server: ServerProcess, tmp_path: Path
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        prometheus_binaries, store_server.base_url.removeprefix("http://"), tmp_path
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_the_checkouts_and_requests_the_store_served(
    store_server: ServerProcess, prometheus: PrometheusServer, postgres: PostgresDatabase
) -> None:
    eventually(
        lambda: prometheus.query('up{job="widget-store"}') == 1,
        timeout=30,
        every=0.25,
        what=lambda: f"the store scraped:\n{store_server.log()}",
    )
    shopper = Shopper(store_server.http, Settings(database=Database.parse(postgres.url)))
    orders = [shopper.checkout(cart((1, 1))).json() for _ in range(5)]
    for order, decision in zip(orders, ["pay", "pay", "pay", "decline", "decline"], strict=True):
        assert shopper.choose(order["payment_url"], decision).status_code == 303
    final = [shopper.wait_for(order["order_id"]) for order in orders]
    assert [order["status"] for order in final].count("DISPATCHED") == 3
    assert shopper.webhook(orders[0]["payment_id"], "paid", 1, secret="forged").status_code == 401

    expected = {
        "sum(widget_store_checkouts_started_total)": 5,
        'sum(widget_store_http_requests_total{route="/checkout/{idempotency_key}",'
        'status="200"})': 5,
        'sum(widget_store_http_requests_total{route="/provider/pay/{page_token}/{decision}",'
        'method="POST"})': 5,
        'sum(widget_store_webhook_deliveries_total{result="accepted"})': 5,
        'sum(widget_store_webhook_deliveries_total{result="bad_signature"})': 1,
        "max(widget_store_checkouts_waiting_for_payment)": 0,
        "max(widget_store_orphaned_sagas)": 0,
    }
    seen: dict[str, float | None] = {}

    def all_counted() -> bool:
        seen.update({expression: prometheus.query(expression) for expression in expected})
        return seen == expected

    eventually(
        all_counted,
        timeout=30,
        every=0.25,
        what=lambda: f"every purchase counted: expected {expected}\nPrometheus has {seen}",
    )

    # The latency histogram made it too, by route template, and the real rules loaded. Its
    # cumulative buckets, not a rate: the checkouts may all predate Prometheus's first scrape,
    # and a rate over samples that never moved is NaN.
    checkout_p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) ("
        'widget_store_http_request_duration_seconds_bucket{route="/checkout/{idempotency_key}"}'
        "))"
    )
    assert checkout_p99 is not None and checkout_p99 > 0
    rules = prometheus.api("/api/v1/rules")["groups"][0]["rules"]
    assert {rule["name"] for rule in rules} >= {
        "WidgetStoreSagaOrphaned",
        "WidgetStoreDeadLetterOpen",
    }
    assert all(rule["health"] == "ok" for rule in rules), rules
