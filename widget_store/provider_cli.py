"""`widget-store webhook` and `widget-store sign-webhook`: the provider's verdict by hand.

A real payment provider tells the shop its verdict by POSTing a signed webhook. These
commands do the same from a terminal: `webhook` signs the body with the configured
`WIDGET_STORE_WEBHOOK_SECRET`, posts it and prints the store's answer; `sign-webhook`
prints the signature header for a body of your own, for curl.
"""

from __future__ import annotations

import json
import sys
import time

import httpx
import sqlalchemy as sa

from widget_store.config import Settings
from widget_store.payments import SIGNATURE_HEADER, sign_webhook, signed_webhook
from widget_store.simulated.provider import provider_payments

DEFAULT_URL = "http://127.0.0.1:8000"


def payment_amount(settings: Settings, payment_id: str) -> int | None:
    """What the provider was asked to charge for this payment, from its own records."""
    engine = sa.create_engine(settings.database.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            amount: int | None = conn.execute(
                sa.select(provider_payments.c.amount_cents).where(
                    provider_payments.c.payment_id == payment_id
                )
            ).scalar()
            return amount
    finally:
        engine.dispose()


def signature_header(secret: str, body: bytes) -> str:
    return f"{SIGNATURE_HEADER}: {sign_webhook(secret, int(time.time()), body)}"


def send_webhook(
    settings: Settings,
    payment_id: str,
    status: str,
    *,
    url: str = DEFAULT_URL,
    amount_cents: int | None = None,
    event_id: str | None = None,
) -> int:
    """Post the signed verdict; print the store's status and reply. Returns an exit code."""
    if amount_cents is None:
        try:
            amount_cents = payment_amount(settings, payment_id)
        except sa.exc.SQLAlchemyError as error:  # no such file or server, no such table
            reason = str(error.orig if isinstance(error, sa.exc.DBAPIError) else error)
            print(
                f"widget-store: could not read payment {payment_id}'s amount from "
                f"{settings.database.describe()} ({reason.splitlines()[0] if reason else error}); "
                "give --amount, or set WIDGET_STORE_DATABASE_URL to the store's database",
                file=sys.stderr,
            )
            return 2
        if amount_cents is None:
            print(
                f"widget-store: no payment {payment_id} at the provider; give --amount",
                file=sys.stderr,
            )
            return 2
    webhook = signed_webhook(
        settings.webhook_secret, payment_id, status, amount_cents, event_id=event_id
    )
    target = f"{url.rstrip('/')}{webhook.path}"
    try:
        response = httpx.post(target, content=webhook.body, headers=webhook.headers, timeout=30)
    except httpx.HTTPError as error:
        print(f"widget-store: could not reach {target}: {error}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.reason_phrase}")
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.is_success else 1
