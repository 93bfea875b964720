"""The payment provider's webhook."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from widget_store import metrics, service
from widget_store.api.deps import settings_of
from widget_store.api.models import ErrorOut, WebhookIn, WebhookOut
from widget_store.domain import (
    PaymentAmountMismatch,
    PaymentClosed,
    PaymentNotFound,
    PaymentVerdict,
    StoreError,
    WebhookMismatch,
)
from widget_store.metrics import WebhookResult
from widget_store.payments import SIGNATURE_HEADER, InvalidSignature, verify_webhook

router = APIRouter(tags=["payment webhook"])


class PaymentStatus(StrEnum):
    PAID = "paid"
    FAILED = "failed"


async def signed_body(request: Request) -> bytes:
    """The raw body, once its signature is proven: checked before anything else."""
    body = await request.body()
    try:
        verify_webhook(
            settings_of(request).webhook_secret, request.headers.get(SIGNATURE_HEADER), body
        )
    except InvalidSignature:
        metrics.webhook_delivered(WebhookResult.BAD_SIGNATURE)
        raise
    return body


@router.post(
    "/payment_webhook/{payment_id}/{payment_status}",
    response_model=WebhookOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookIn.model_json_schema()}},
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix seconds>,v1=<HMAC-SHA256 hex of f'{t}.{raw body}'>",
            }
        ],
    },
    responses={
        400: {
            "model": ErrorOut,
            "description": "the body names another payment or verdict than the path, reuses "
            "another payment's event, or the amount is not the order's total",
        },
        401: {"model": ErrorOut, "description": "unsigned, forged or stale"},
        404: {"model": ErrorOut, "description": "unknown payment"},
        409: {"model": ErrorOut, "description": "payment already decided or past its deadline"},
    },
)
async def payment_webhook(
    body: Annotated[bytes, Depends(signed_body)],
    payment_id: Annotated[str, Path(min_length=1, max_length=64)],
    payment_status: PaymentStatus,
) -> dict[str, Any]:
    """The provider's verdict on a payment: `paid` or `failed`.

    The signed body must name the same payment and verdict as the path: a signature
    authorises exactly what its body says, and nothing else.
    """
    try:
        payload = WebhookIn.model_validate_json(body)
    except ValidationError as error:
        metrics.webhook_delivered(WebhookResult.BAD_REQUEST)
        raise RequestValidationError(error.errors(include_url=False)) from None
    try:
        if payload.payment_id != payment_id or payload.status != payment_status.value:
            raise WebhookMismatch(
                "the signed body is about another payment or verdict than the URL"
            )
        reply = await service.accept_payment_verdict(
            payment_id, PaymentVerdict(payment_status.value), payload.event_id, payload.amount_cents
        )
    except StoreError as error:
        metrics.webhook_delivered(refusal(error))
        raise
    duplicate = reply.pop("duplicate", False)
    metrics.webhook_delivered(WebhookResult.DUPLICATE if duplicate else WebhookResult.ACCEPTED)
    return reply


def refusal(error: StoreError) -> WebhookResult:
    """What a refused delivery was, for the webhook metrics."""
    if isinstance(error, PaymentNotFound):
        return WebhookResult.UNKNOWN_PAYMENT
    if isinstance(error, PaymentAmountMismatch):
        return WebhookResult.WRONG_AMOUNT
    if isinstance(error, PaymentClosed):
        # Decided already (paid or failed): a second verdict. Still awaiting, timed out
        # or never opened: it came after the deadline.
        verdict = error.extra.get("order", {}).get("payment_verdict")
        decided = verdict in (PaymentVerdict.PAID.value, PaymentVerdict.FAILED.value)
        return WebhookResult.DUPLICATE if decided else WebhookResult.LATE
    return WebhookResult.BAD_REQUEST
