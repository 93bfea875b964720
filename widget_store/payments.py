"""The payment-provider boundary: what the store needs from a provider, and webhook signing.

A provider hosts the payment page, tells the store its verdict through a signed webhook,
and gives money back on request. `widget_store/simulated/provider.py` is the provider
this demo runs; a real one would implement `PaymentProvider` the same way.

Webhooks are signed Stripe-style: `Widget-Signature: t=<unix seconds>,v1=<hex>`, where
the digest is HMAC-SHA256 over f"{t}.{raw body}" with the shared secret. The body names
everything it authorises (`event_id`, `payment_id`, `status`, `amount_cents`), so a
signature seen once cannot be replayed to pay or decline any other payment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from widget_store.domain import InvalidSignature, PaymentProviderUnavailable, RefundFailed

__all__ = [
    "FUTURE_TOLERANCE_S",
    "REPLAY_WINDOW_S",
    "SIGNATURE_HEADER",
    "Charge",
    "DirectCharges",
    "InvalidSignature",
    "PaymentGivenBack",
    "PaymentProvider",
    "PaymentProviderUnavailable",
    "PaymentRequest",
    "ProviderState",
    "RefundFailed",
    "SignedWebhook",
    "sign_webhook",
    "signed_webhook",
    "verify_webhook",
    "webhook_body",
]

SIGNATURE_HEADER = "Widget-Signature"
REPLAY_WINDOW_S = 300  # how old a signed webhook may be
FUTURE_TOLERANCE_S = 5  # clock skew allowed the other way; more is refused
MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True)
class PaymentRequest:
    payment_id: str
    order_id: int
    amount_cents: int
    description: str
    expires_at_epoch: float
    return_url: str  # where the hosted page sends the shopper back (their order page)


class ProviderState(StrEnum):
    """A payment's states at the provider."""

    OPEN = "open"  # waiting for the shopper (or authorised, not captured)
    CAPTURED = "captured"
    DECLINED = "declined"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    VOIDED = "voided"
    UNKNOWN = "unknown"  # the provider has no such payment


@dataclass(frozen=True)
class PaymentGivenBack:
    """What the provider did when asked to give a payment back.

    `before` is the state the provider found; `after` the state it left. A captured
    payment is refunded; an open one is voided, so that it can never be captured later;
    anything else is left as it is, because nothing was captured.
    """

    before: ProviderState
    after: ProviderState
    reference: str = ""  # the refund's ID when money moved


class PaymentProvider(Protocol):
    async def create_payment(self, request: PaymentRequest) -> str:
        """Open a payment; return the hosted page's URL. Idempotent by payment ID."""
        ...

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        """Refund what was captured, void what was not; the same key acts once.

        Raises PaymentProviderUnavailable when the provider cannot answer now.
        """
        ...


@dataclass(frozen=True)
class Charge:
    """What a direct charge came to (a step's output: its path is a stored format).

    Captured, with the provider's transaction ID; or refused, with the provider's error
    and decline code (`insufficient_funds`, `DECLINED`).
    """

    captured: bool
    transaction_id: str = ""
    error: str = ""
    decline_code: str = ""


class DirectCharges(Protocol):
    async def charge(self, payment_id: str, payer_id: str) -> Charge:
        """Capture an open payment now, without a hosted page or a webhook.

        Once per payment ID: charging a payment decided already answers that decision.
        Raises PaymentProviderUnavailable when the provider cannot answer now.
        """
        ...


def webhook_body(event_id: str, payment_id: str, status: str, amount_cents: int) -> bytes:
    """The JSON body a provider signs: it names the payment and the verdict it authorises."""
    return json.dumps(
        {
            "event_id": event_id,
            "payment_id": payment_id,
            "status": status,
            "amount_cents": amount_cents,
        }
    ).encode()


@dataclass(frozen=True)
class SignedWebhook:
    """A verdict as a provider posts it: where, what, and the signature over it."""

    path: str
    body: bytes
    headers: dict[str, str]


def signed_webhook(
    secret: str,
    payment_id: str,
    status: str,
    amount_cents: int,
    *,
    event_id: str | None = None,
    now: float | None = None,
) -> SignedWebhook:
    """The provider's webhook for a verdict, signed now with `secret`."""
    body = webhook_body(event_id or f"evt_{uuid.uuid4().hex}", payment_id, status, amount_cents)
    stamp = int(time.time() if now is None else now)
    headers = {
        SIGNATURE_HEADER: sign_webhook(secret, stamp, body),
        "Content-Type": "application/json",
    }
    return SignedWebhook(f"/payment_webhook/{payment_id}/{status}", body, headers)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The `Widget-Signature` header value for a webhook body sent at `timestamp`."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_webhook(
    secret: str, header: str | None, body: bytes, *, now: float | None = None
) -> None:
    """Raise InvalidSignature unless `header` signs `body` with `secret`, sent recently.

    Recently: at most five minutes ago, and not more than a few seconds in the future
    (a timestamp far ahead would stretch the replay window at will).
    """
    if not header:
        raise InvalidSignature("missing signature")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    raw_t = fields.get("t", [""])[0]
    if not (raw_t.isascii() and raw_t.isdigit() and len(raw_t) <= MAX_TIMESTAMP_DIGITS):
        raise InvalidSignature("malformed signature")
    timestamp = int(raw_t)
    current = time.time() if now is None else now
    if timestamp < current - REPLAY_WINDOW_S or timestamp > current + FUTURE_TOLERANCE_S:
        raise InvalidSignature("signature timestamp outside the replay window")
    expected = _digest(secret, timestamp, body).encode()
    # Constant-time, on bytes (a non-ASCII str would make compare_digest raise), and any
    # of several v1 values may match (secret rotation).
    given = [value.encode("utf-8", "replace") for value in fields.get("v1", [])]
    if not any(hmac.compare_digest(expected, value) for value in given):
        raise InvalidSignature("signature does not match")
