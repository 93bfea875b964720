"""GET /metrics: the store's Prometheus metrics, for a scraper.

Open unless WIDGET_STORE_METRICS_TOKEN is set: Prometheus usually scrapes over a private
network without credentials, and the figures are counts and latencies, never an order,
key or address. Set the token where the store is reachable from outside; Prometheus
then sends it with `authorization: {credentials: ...}` in its scrape config.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response

from widget_store import metrics
from widget_store.api.deps import Reader, settings_of
from widget_store.api.models import ErrorOut
from widget_store.queries.health import store_health

router = APIRouter(tags=["operations"])


def require_metrics_token(request: Request) -> None:
    """With WIDGET_STORE_METRICS_TOKEN set, a scrape needs `Authorization: Bearer <it>`."""
    expected = settings_of(request).metrics_token
    if expected is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "metrics need the metrics bearer token", {"WWW-Authenticate": "Bearer"}
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        },
        401: {"model": ErrorOut, "description": "WIDGET_STORE_METRICS_TOKEN is set and not sent"},
    },
)
async def prometheus_metrics(request: Request, db: Reader) -> Response:
    """Counters and histograms of every worker, and health gauges read from the database."""
    require_metrics_token(request)
    config = settings_of(request)
    health = await store_health(
        db, datetime.now(UTC), executors=config.executors, app_version=config.app_version
    )
    await db.close()  # reading the workers' files takes no connection
    body = await asyncio.to_thread(
        metrics.exposition, metrics.health_families(health), config.metrics_dir
    )
    return Response(body, media_type=metrics.CONTENT_TYPE)
