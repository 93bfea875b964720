"""What metrics and JSON logs cost per operation, measured in isolation (CPU time).

The end-to-end comparison (`bench/observability.py`) is what the cost target is about,
but on a shared machine its runs move by more than the cost it looks for. These figures
bound it from below: per request, per webhook, per log record and per scrape, in
prometheus-client's multiprocess mode as `widget-store serve` runs it. Run as
`python -m bench.observability_micro` (it sets the metrics folder up before
prometheus-client is imported, as `serve` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPEAT = 20_000


def _per_call_us(action: Callable[[], object], repeat: int = REPEAT) -> float:
    started = time.process_time()
    for _ in range(repeat):
        action()
    return (time.process_time() - started) / repeat * 1e6


def _middleware_us(repeat: int = REPEAT) -> dict[str, float]:
    from widget_store import metrics
    from widget_store.middleware import RequestMetrics

    class Route:
        path = "/order/{order_id}"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Route  # what the router leaves behind
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": "/order/1", "headers": []}

    async def run(wrapped: Any) -> float:
        started = time.process_time()
        for _ in range(repeat):
            await wrapped(scope(), receive, send)
        return (time.process_time() - started) / repeat * 1e6

    bare = asyncio.run(run(app))
    measured = asyncio.run(run(RequestMetrics(app, metrics.http_request)))
    return {"bare_request_us": bare, "with_request_metrics_us": measured}


def _log_us() -> dict[str, float]:
    from widget_store.logs import JsonFormatter, log_context

    record = logging.LogRecord(
        "dbos",
        logging.WARNING,
        __file__,
        1,
        "compensation %s failed (attempt %d)",
        ("RefundPayment", 3),
        None,
    )
    text = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    json_formatter = JsonFormatter()
    with log_context(order_id=42, checkout_key="bench-key", step="refund_payment"):
        return {
            "text_record_us": _per_call_us(lambda: text.format(record)),
            "json_record_us": _per_call_us(lambda: json_formatter.format(record)),
        }


def _scrape_ms(folder: str) -> float:
    from widget_store import metrics
    from widget_store.events import OutboxLag
    from widget_store.queries.health import StoreHealth

    health = StoreHealth(
        now=datetime.now(UTC),
        waiting_for_payment=3,
        past_payment_deadline=0,
        oldest_waiting=None,
        dead_letters_open=0,
        orphaned_sagas=0,
        outbox=OutboxLag(unsent=0, oldest_unsent_at=None, oldest_age_s=None),
    )
    return (
        _per_call_us(lambda: metrics.exposition(metrics.health_families(health), Path(folder)), 200)
        / 1000
    )


def main() -> None:
    folder = tempfile.mkdtemp(prefix="widget-store-metrics-bench-")
    try:
        print(json.dumps(measure(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(folder: str) -> dict[str, float]:
    if "prometheus_client" in sys.modules:
        raise SystemExit("prometheus_client was imported before its folder was set up")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from widget_store import metrics

    for route in ("/order/{order_id}", "/checkout/{idempotency_key}", "/healthz"):
        metrics.http_request("GET", route, 200, 0.01)  # series a scrape reads
    figures: dict[str, float] = {
        "record_request_us": _per_call_us(
            lambda: metrics.http_request("GET", "/order/{order_id}", 200, 0.012)
        ),
        "record_webhook_us": _per_call_us(lambda: metrics.webhook_delivered("accepted")),
        "record_checkout_started_us": _per_call_us(metrics.checkout_started),
        **_middleware_us(),
        **_log_us(),
        "scrape_ms": _scrape_ms(folder),
    }
    return figures


if __name__ == "__main__":
    main()
