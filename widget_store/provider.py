"""The simulated payment provider: an outside service that happens to run in this process.

It keeps its own table, hosts the payment page at /provider/pay/{payment_id}, and when
the shopper pays or declines it calls the store's webhook over HTTP, signed, the way a
real provider would. Delivery goes through an in-process ASGI transport, so the webhook
request crosses the store's whole HTTP stack (signature check included) without needing
a network or knowing the public address the server was started on.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
import sqlalchemy as sa
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from widget_store.payments import SIGNATURE_HEADER, PaymentRequest, RefundFailed, sign_webhook

log = logging.getLogger("widget_store.provider")

provider_metadata = sa.MetaData()

provider_payments = sa.Table(
    "provider_payments",
    provider_metadata,
    sa.Column("payment_id", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("return_url", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    # open -> captured | declined | expired; captured -> refunded | voided
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(64)),
    sa.Column("refund_key", sa.String(200)),
    sa.Column("refunds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    # Like a real provider, it keeps delivering a decision until the shop answers.
    sa.Column("decided_at", sa.Float),
    sa.Column("delivered", sa.Boolean, nullable=False, server_default=sa.false()),
)

DECISIONS = {"pay": ("captured", "paid"), "decline": ("declined", "failed")}


@dataclass(frozen=True)
class Delivery:
    """What happened when the provider told the store its verdict."""

    payment_id: str
    provider_status: str
    webhook_status: int | None
    webhook_body: dict[str, Any]
    return_url: str


class PaymentNotOpen(Exception):
    pass


WebhookClient = Callable[[], httpx.AsyncClient]


class SimulatedPaymentProvider:
    """Hosted payment pages, signed webhooks and idempotent refunds, backed by one table."""

    def __init__(self, engine: AsyncEngine, secret: str, webhook_client: WebhookClient) -> None:
        self._engine = engine
        self._secret = secret
        self._webhook_client = webhook_client

    async def create_payment(self, request: PaymentRequest) -> str:
        """Open the payment (once per payment ID) and return its hosted page."""
        values = {
            "payment_id": request.payment_id,
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "description": request.description,
            "return_url": f"/order.html?order_id={request.order_id}",
            "expires_at": request.expires_at_epoch,
            "status": "open",
            "created_at": time.time(),
        }
        async with self._engine.begin() as conn:
            exists = await conn.execute(
                sa.select(provider_payments.c.payment_id).where(
                    provider_payments.c.payment_id == request.payment_id
                )
            )
            if exists.first() is None:
                await conn.execute(sa.insert(provider_payments).values(**values))
        return f"/provider/pay/{request.payment_id}"

    async def refund(self, payment_id: str, amount_cents: int, idempotency_key: str) -> str:
        """Refund a captured payment once; a repeated key gets the same answer."""
        table = provider_payments
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(table)
                .where(table.c.payment_id == payment_id, table.c.status == "captured")
                .values(status="refunded", refund_key=idempotency_key, refunds=table.c.refunds + 1)
            )
            row = (
                await conn.execute(sa.select(table).where(table.c.payment_id == payment_id))
            ).first()
        if row is None:
            raise RefundFailed(f"no payment {payment_id}")
        if row.status in ("refunded", "voided"):
            return f"refund-{payment_id}"
        raise RefundFailed(f"payment {payment_id} is {row.status}, nothing to refund")

    async def payment(self, payment_id: str) -> Any:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sa.select(provider_payments).where(provider_payments.c.payment_id == payment_id)
            )
            return result.first()

    async def decide(self, payment_id: str, decision: str) -> Delivery:
        """Capture or decline, then tell the store. Repeating a decision re-delivers it."""
        new_status, _ = DECISIONS[decision]
        table = provider_payments
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(sa.select(table).where(table.c.payment_id == payment_id))
            ).first()
            if row is None:
                raise PaymentNotOpen("This payment does not exist.")
            if row.status == "open" and time.time() >= row.expires_at:
                await conn.execute(
                    sa.update(table)
                    .where(table.c.payment_id == payment_id, table.c.status == "open")
                    .values(status="expired")
                )
                raise PaymentNotOpen("This payment has expired; the shop stopped waiting.")
            if row.status == "open":
                decided = await conn.execute(
                    sa.update(table)
                    .where(table.c.payment_id == payment_id, table.c.status == "open")
                    .values(
                        status=new_status,
                        event_id=f"evt_{uuid.uuid4().hex}",
                        decided_at=time.time(),
                    )
                )
                if decided.rowcount == 0:
                    raise PaymentNotOpen("This payment was decided a moment ago.")
            elif row.status != new_status:
                raise PaymentNotOpen(f"This payment is already {row.status}.")
        return await self._settle(payment_id)

    async def redeliver(self, older_than_s: float = 2.0) -> int:
        """Deliver again every decision the shop has not answered; returns how many."""
        table = provider_payments
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sa.select(table.c.payment_id).where(
                    table.c.status.in_(("captured", "declined")),
                    table.c.delivered.is_(False),
                    table.c.decided_at < time.time() - older_than_s,
                )
            )
            pending = list(result.scalars())
        for payment_id in pending:
            await self._settle(payment_id)
        return len(pending)

    async def keep_redelivering(self, interval_s: float = 10.0) -> None:
        """Run until cancelled: the provider's own retry loop for unanswered webhooks."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.redeliver()
            except Exception as error:  # the database is down, say: try again next round
                log.warning("webhook redelivery failed: %r", error)

    async def _settle(self, payment_id: str) -> Delivery:
        """Deliver the decision; once the shop answers, stop (and void what it refused)."""
        table = provider_payments
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(table).where(table.c.payment_id == payment_id))
            ).one()
        verdict = "paid" if row.status in ("captured", "refunded", "voided") else "failed"
        status, body = await self._deliver(payment_id, verdict, row.event_id, row.amount_cents)
        final = row.status
        if status is not None and status < 500:
            refused = status >= 400
            async with self._engine.begin() as conn:
                if refused and row.status == "captured":
                    # The shop refused the payment (too late, say): give the money back.
                    await conn.execute(
                        sa.update(table)
                        .where(table.c.payment_id == payment_id, table.c.status == "captured")
                        .values(status="voided")
                    )
                    final = "voided"
                await conn.execute(
                    sa.update(table).where(table.c.payment_id == payment_id).values(delivered=True)
                )
        return Delivery(payment_id, final, status, body, row.return_url)

    async def _deliver(
        self, payment_id: str, verdict: str, event_id: str, amount_cents: int
    ) -> tuple[int | None, dict[str, Any]]:
        body = json.dumps({"event_id": event_id, "amount_cents": amount_cents}).encode()
        path = f"/payment_webhook/{payment_id}/{verdict}"
        last: tuple[int | None, dict[str, Any]] = (None, {"detail": "not delivered"})
        async with self._webhook_client() as client:
            for _attempt in range(3):
                headers = {
                    SIGNATURE_HEADER: sign_webhook(self._secret, int(time.time()), body),
                    "Content-Type": "application/json",
                }
                try:
                    response = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError as error:
                    last = (None, {"detail": f"delivery failed: {type(error).__name__}"})
                    continue
                try:
                    payload = response.json()
                except ValueError:
                    payload = {"detail": response.text[:200]}
                last = (response.status_code, payload)
                if response.status_code < 500:
                    break
        return last


# --- the hosted payment page ----------------------------------------------------------


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - SimPay</title>
<link rel="stylesheet" href="/static/provider.css">
<link rel="stylesheet" href="/static/site.css">
<script type="module" src="/static/site.js"></script></head>
<body><main class="provider"><p class="brand">SimPay, the simulated payment provider</p>
{body}</main></body></html>"""


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {}}}


PaymentId = Annotated[str, Path(min_length=1, max_length=64)]


def provider_router(
    get_provider: Callable[[Request], SimulatedPaymentProvider],
    responses: dict[int | str, dict[str, Any]],
) -> APIRouter:
    router = APIRouter(prefix="/provider", tags=["simulated payment provider"], responses=responses)

    @router.get(
        "/pay/{payment_id}",
        response_class=HTMLResponse,
        responses={404: _html("unknown payment")},
    )
    async def payment_page(payment_id: PaymentId, request: Request) -> HTMLResponse:
        """The provider's hosted payment page, with Pay and Decline buttons."""
        row = await get_provider(request).payment(payment_id)
        if row is None:
            body = "<h1>Unknown payment</h1><p>This payment does not exist.</p>"
            return HTMLResponse(_page("Unknown payment", body), status_code=404)
        amount = f"${row.amount_cents / 100:,.2f}"
        expires = datetime.fromtimestamp(row.expires_at, UTC).strftime("%H:%M:%S UTC")
        if row.status == "open":
            actions = f"""<form method="post" action="/provider/pay/{html.escape(payment_id)}/pay">
<button type="submit" class="pay">Pay</button></form>
<form method="post" action="/provider/pay/{html.escape(payment_id)}/decline">
<button type="submit" class="decline">Decline</button></form>"""
        else:
            actions = f"<p>This payment is {html.escape(row.status)}.</p>"
        body = f"""<h1>Pay {amount}</h1>
<p class="summary">{html.escape(row.description)}</p>
<p class="amount">Amount: <strong>{amount}</strong></p>
<p class="expiry">Open until {expires}</p>
<div class="actions">{actions}</div>
<p><a href="{html.escape(row.return_url)}">Back to the shop</a></p>"""
        return HTMLResponse(_page(f"Pay {amount}", body))

    @router.post(
        "/pay/{payment_id}/{decision}",
        response_class=HTMLResponse,
        status_code=303,
        responses={
            202: _html("captured; the shop will be told as soon as it answers"),
            303: {"description": "decided and delivered: on to the shop's order page"},
            409: _html("the payment cannot be decided (expired, decided) or the shop refused it"),
        },
    )
    async def decide(
        payment_id: PaymentId, decision: Literal["pay", "decline"], request: Request
    ) -> Response:
        """The shopper's choice: `pay` or `decline`. The provider then calls the webhook."""
        try:
            delivery = await get_provider(request).decide(payment_id, decision)
        except PaymentNotOpen as refused:
            body = f"<h1>Payment not possible</h1><p>{html.escape(str(refused))}</p>"
            return HTMLResponse(_page("Payment not possible", body), status_code=409)
        if delivery.webhook_status is not None and delivery.webhook_status < 300:
            return RedirectResponse(delivery.return_url, status_code=303)
        if delivery.webhook_status is None or delivery.webhook_status >= 500:
            body = f"""<h1>Payment {delivery.provider_status}</h1>
<p>The shop is not answering right now; it will be told as soon as it is back.</p>
<p><a href="{html.escape(delivery.return_url)}">Back to your order</a></p>"""
            return HTMLResponse(_page("Payment on its way", body), status_code=202)
        detail = str(delivery.webhook_body.get("detail", "the shop did not answer"))
        outcome = (
            "Your money was returned."
            if delivery.provider_status == "voided"
            else f"The payment is {delivery.provider_status}."
        )
        body = f"""<h1>The shop did not accept this payment</h1>
<p>{html.escape(detail)}</p><p>{outcome}</p>
<p><a href="{html.escape(delivery.return_url)}">Back to your order</a></p>"""
        return HTMLResponse(_page("Payment not accepted", body), status_code=409)

    return router
