"""The payment-provider boundary: what the store needs from a provider, and webhook signing.

A provider hosts the payment page, tells the store its verdict through a signed webhook,
and refunds on request. `provider.py` holds the simulated provider this demo runs; a
real one would implement `PaymentProvider` the same way.

Webhooks are signed Stripe-style: `Widget-Signature: t=<unix seconds>,v1=<hex>`, where
the digest is HMAC-SHA256 over f"{t}.{raw body}" with the shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Protocol

SIGNATURE_HEADER = "Widget-Signature"
REPLAY_WINDOW_S = 300


@dataclass(frozen=True)
class PaymentRequest:
    payment_id: str
    order_id: int
    amount_cents: int
    description: str
    expires_at_epoch: float


class PaymentProvider(Protocol):
    async def create_payment(self, request: PaymentRequest) -> str:
        """Open a payment; return the hosted page's URL. Idempotent by payment ID."""
        ...

    async def refund(self, payment_id: str, amount_cents: int, idempotency_key: str) -> str:
        """Refund a captured payment; the same idempotency key refunds once."""
        ...


class RefundFailed(Exception):
    """The provider could not refund now; the saga retries the compensation."""


class InvalidSignature(Exception):
    """The webhook is unsigned, forged or stale. Deliberately says no more than that."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The `Widget-Signature` header value for a webhook body sent at `timestamp`."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_webhook(
    secret: str, header: str | None, body: bytes, *, now: float | None = None
) -> None:
    """Raise InvalidSignature unless `header` signs `body` with `secret` within the window."""
    if not header:
        raise InvalidSignature("missing signature")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("malformed signature") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > REPLAY_WINDOW_S:
        raise InvalidSignature("signature timestamp outside the replay window")
    expected = _digest(secret, timestamp, body)
    # Constant-time comparison, and any of several v1 values may match (secret rotation).
    if not any(hmac.compare_digest(expected, given) for given in fields.get("v1", [])):
        raise InvalidSignature("signature does not match")
