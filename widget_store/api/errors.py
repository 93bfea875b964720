"""One place that maps domain errors to HTTP statuses, and hides everything else."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from widget_store.domain import (
    CheckoutRejected,
    CheckoutStillStarting,
    DeadLetterNotFound,
    DeadLetterNotParked,
    IdempotencyConflict,
    InvalidRequest,
    OrderNotFound,
    OutOfStock,
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    StoreError,
    UnknownProduct,
)
from widget_store.payments import InvalidSignature

log = logging.getLogger("widget_store.api")

STATUS: dict[type[StoreError], int] = {
    InvalidRequest: 422,
    UnknownProduct: 422,
    OrderNotFound: 404,
    PaymentNotFound: 404,
    DeadLetterNotFound: 404,
    DeadLetterNotParked: 409,
    PaymentAmountMismatch: 400,
    OutOfStock: 409,
    IdempotencyConflict: 409,
    CheckoutRejected: 409,
    PaymentClosed: 409,
    CheckoutStillStarting: 503,
}


async def store_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StoreError)
    status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"detail": error.message, **error.extra}, status, headers=headers)


async def invalid_input(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's validation errors, with a one-line `detail` like every other error."""
    assert isinstance(error, RequestValidationError)
    problems = jsonable_encoder(error.errors())
    summary = "; ".join(_describe(problem) for problem in problems[:3])
    if len(problems) > 3:
        summary += f"; and {len(problems) - 3} more"
    return JSONResponse({"detail": summary or "invalid input", "errors": problems}, 422)


def _describe(problem: dict[str, Any]) -> str:
    location = problem.get("loc") or []
    where = ".".join(str(part) for part in location)
    return f"{where}: {problem.get('msg', 'invalid')}"


async def invalid_signature(request: Request, error: Exception) -> JSONResponse:
    # Logged without the header or the secret; the reply says no more than "no".
    log.warning("refused webhook %s: %s", request.url.path, error)
    return JSONResponse({"detail": "invalid or missing webhook signature"}, 401)


async def database_error(request: Request, error: Exception) -> JSONResponse:
    log.error("database error on %s %s: %s", request.method, request.url.path, type(error).__name__)
    unavailable = isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    if unavailable:
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"}, 503, {"Retry-After": "1"}
        )
    return JSONResponse({"detail": "internal error"}, 500)


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(InvalidSignature, invalid_signature)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(Exception, unexpected_error)
