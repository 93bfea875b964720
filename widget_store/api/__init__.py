"""The HTTP API: one router per resource, and the error mapping."""

from typing import Any

from fastapi import APIRouter

from widget_store.api import admin, ops, orders, products, recovery, trips, webhooks
from widget_store.api.models import ErrorOut


def _json_error(description: str) -> dict[str, Any]:
    # Spelled out as JSON, so routes that answer HTML (the provider's) document it right.
    schema = ErrorOut.model_json_schema()
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Answers any route may give, documented once: every error is {"detail": "..."}.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _json_error("the request body cannot be read"),
    413: _json_error("the request body is over 1 MB"),
    422: _json_error("invalid input; `errors` lists each problem"),
    503: _json_error("the database is unavailable; retry shortly"),
}


def api_router() -> APIRouter:
    router = APIRouter(responses=COMMON_ERRORS)
    for module in (products, orders, trips, webhooks, admin, recovery, ops):
        router.include_router(module.router)
    return router
