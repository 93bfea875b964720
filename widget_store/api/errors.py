"""One place that maps domain errors to HTTP statuses, and hides everything else."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from widget_store.domain import (
    CheckoutRejected,
    CheckoutStillStarting,
    DeadLetterNotFound,
    DeadLetterNotParked,
    IdempotencyConflict,
    InvalidRequest,
    InvalidSignature,
    NotAuthorized,
    OrderNotFound,
    OutOfStock,
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    StoreBusy,
    StoreError,
    StoreStalled,
    TripFailed,
    TripNotFound,
    TripStillRunning,
    UnknownProduct,
    WebhookMismatch,
)
from widget_store.durability import database_unavailable

log = logging.getLogger("widget_store.api")

STATUS: dict[type[StoreError], int] = {
    InvalidRequest: 422,
    UnknownProduct: 422,
    OrderNotFound: 404,
    PaymentNotFound: 404,
    TripNotFound: 404,
    DeadLetterNotFound: 404,
    DeadLetterNotParked: 409,
    PaymentAmountMismatch: 400,
    WebhookMismatch: 400,
    NotAuthorized: 401,
    OutOfStock: 409,
    IdempotencyConflict: 409,
    CheckoutRejected: 409,
    PaymentClosed: 409,
    TripFailed: 409,
    TripStillRunning: 503,
    CheckoutStillStarting: 503,
    StoreBusy: 503,
    StoreStalled: 503,
}


async def store_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StoreError)
    status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"detail": error.message, **error.extra}, status, headers=headers)


async def invalid_input(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's validation errors, with a one-line `detail` like every other error."""
    assert isinstance(error, RequestValidationError)
    # Each problem without the offending input: echoing it back could make the answer
    # itself unencodable (a lone surrogate, an infinite number, bytes that are not UTF-8).
    problems = [
        _printable(
            jsonable_encoder({k: v for k, v in problem.items() if k in ("type", "loc", "msg")})
        )
        for problem in error.errors()
    ]
    summary = "; ".join(_describe(problem) for problem in problems[:3])
    if len(problems) > 3:
        summary += f"; and {len(problems) - 3} more"
    return JSONResponse({"detail": summary or "invalid input", "errors": problems}, 422)


def _printable(value: Any) -> Any:
    """The value with every string made encodable (a field name may be a lone surrogate)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    return value


def _describe(problem: dict[str, Any]) -> str:
    location = problem.get("loc") or []
    where = ".".join(str(part) for part in location)
    return f"{where}: {problem.get('msg', 'invalid')}"


async def invalid_signature(request: Request, error: Exception) -> JSONResponse:
    # Logged without the header or the secret; the reply says no more than "no".
    log.warning("refused webhook %s: %s", request.url.path, error)
    return JSONResponse({"detail": "invalid or missing webhook signature"}, 401)


async def database_error(request: Request, error: Exception) -> JSONResponse:
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or "-"
    log.error(
        "database error on %s %s: %s (SQLSTATE %s)",
        *(request.method, request.url.path, type(error).__name__, code),
    )
    if database_unavailable(error):
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"}, 503, {"Retry-After": "1"}
        )
    return JSONResponse({"detail": "internal error"}, 500)


async def database_unreachable(request: Request, error: Exception) -> JSONResponse:
    # asyncpg raises the socket's own error (refused, reset) when a new connection
    # cannot be made, as while PostgreSQL restarts; SQLAlchemy passes it on unwrapped.
    log.error("database unreachable on %s %s: %r", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"}, 503, {"Retry-After": "1"}
    )


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, 500)


async def pool_exhausted(request: Request, error: Exception) -> JSONResponse:
    # Every connection this process may hold is busy: the store is at its budget
    # (WIDGET_STORE_DB_POOL_SIZE), which keeps it inside the server's max_connections.
    log.warning("no database connection free for %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": "the store is busy; try again shortly"}, 503, {"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(InvalidSignature, invalid_signature)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(PoolTimeout, pool_exhausted)
    app.add_exception_handler(ConnectionError, database_unreachable)
    app.add_exception_handler(Exception, unexpected_error)
