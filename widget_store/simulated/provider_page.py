"""The simulated provider's hosted payment page: Pay and Decline, behind an unguessable link.

The page's address holds the payment's page token, which only the shopper who checked
out was given (in the checkout's `payment_url`): the payment ID is never enough to pay
or decline someone else's order. In production the store mounts this page only when
`WIDGET_STORE_STAGING=1` says it is a staging store (see create_app).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from widget_store.simulated.provider import (
    PaymentNotOpen,
    SimulatedPaymentProvider,
    UnknownPaymentPage,
)


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


PageToken = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def provider_router(
    get_provider: Callable[[Request], SimulatedPaymentProvider],
    responses: dict[int | str, dict[str, Any]],
) -> APIRouter:
    router = APIRouter(prefix="/provider", tags=["simulated payment provider"], responses=responses)

    @router.get(
        "/pay/{page_token}",
        response_class=HTMLResponse,
        responses={404: _html("unknown payment")},
    )
    async def payment_page(page_token: PageToken, request: Request) -> HTMLResponse:
        """The provider's hosted payment page, with Pay and Decline buttons."""
        row = await get_provider(request).payment_by_page(page_token)
        if row is None:
            body = "<h1>Unknown payment</h1><p>This payment does not exist.</p>"
            return HTMLResponse(_page("Unknown payment", body), status_code=404)
        amount = f"${row.amount_cents / 100:,.2f}"
        expires = datetime.fromtimestamp(row.expires_at, UTC).strftime("%H:%M:%S UTC")
        if row.status == "open":
            actions = f"""<form method="post" action="/provider/pay/{html.escape(page_token)}/pay">
<button type="submit" class="pay">Pay</button></form>
<form method="post" action="/provider/pay/{html.escape(page_token)}/decline">
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
        "/pay/{page_token}/{decision}",
        response_class=HTMLResponse,
        status_code=303,
        responses={
            202: _html("captured; the shop will be told as soon as it answers"),
            303: {"description": "decided and delivered: on to the shop's order page"},
            404: _html("no payment has this page token"),
            409: _html("the payment cannot be decided (expired, decided) or the shop refused it"),
        },
    )
    async def decide(
        page_token: PageToken, decision: Literal["pay", "decline"], request: Request
    ) -> Response:
        """The shopper's choice: `pay` or `decline`. The provider then calls the webhook."""
        try:
            delivery = await get_provider(request).decide(page_token, decision)
        except UnknownPaymentPage:
            body = "<h1>Unknown payment</h1><p>This payment does not exist.</p>"
            return HTMLResponse(_page("Unknown payment", body), status_code=404)
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
