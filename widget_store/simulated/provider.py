"""The simulated payment provider: an outside service that happens to run in this process.

It keeps its own table and a payment's real states (open, captured, declined, expired,
refunded, voided). Its hosted page (`provider_page.py`) is reached through an
unguessable page token, never the payment ID; when the shopper pays or declines there,
it calls the store's webhook over HTTP, signed, the way a real provider would. Delivery
goes through an in-process ASGI transport, so the webhook crosses the store's whole
HTTP stack (signature check included) without a network.

A verdict may also reach the store without this page, by a signed webhook posted
directly (the `widget-store webhook` command, or a real provider). The provider's own
record then stays open, and a refund request voids it, exactly as a real provider
would void an authorisation it never captured.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from widget_store.payments import (
    SIGNATURE_HEADER,
    Charge,
    PaymentGivenBack,
    PaymentRequest,
    ProviderState,
    sign_webhook,
    webhook_body,
)

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
    # open -> captured | declined | expired | voided; captured -> refunded | voided
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(64)),
    sa.Column("refund_key", sa.String(200)),
    sa.Column("refunds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    # Like a real provider, it keeps delivering a decision until the shop answers.
    sa.Column("decided_at", sa.Float),
    sa.Column("delivered", sa.Boolean, nullable=False, server_default=sa.false()),
    # The secret part of the hosted page's address: whoever has it may pay or decline.
    sa.Column("page_token", sa.String(64)),
    sa.UniqueConstraint("page_token", name="uq_provider_payments_page_token"),
)

# The demo's payer whose account cannot cover anything: a direct charge for them is declined.
INSUFFICIENT_FUNDS = frozenset({"u999"})

DECISIONS = {"pay": (ProviderState.CAPTURED, "paid"), "decline": (ProviderState.DECLINED, "failed")}


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


class UnknownPaymentPage(PaymentNotOpen):
    """No payment has this page token (a payment ID, say, is not one)."""


WebhookClient = Callable[[], httpx.AsyncClient]

# Run for every purchase: built once, the values bound per call.
_PAGE_TOKEN_OF = sa.select(provider_payments.c.page_token).where(
    provider_payments.c.payment_id == sa.bindparam("b_payment")
)


@functools.cache
def _open_payment(dialect: str) -> Any:
    """Open a payment unless one with its ID is open already, returning the new page
    token (nothing if it was there: the first call's token stands)."""
    if dialect == "postgresql":
        statement: Any = postgresql.insert(provider_payments)
    elif dialect == "sqlite":
        statement = sqlite.insert(provider_payments)
    else:
        raise ValueError(f"the simulated provider runs on PostgreSQL or SQLite, not {dialect}")
    return statement.on_conflict_do_nothing(
        index_elements=[provider_payments.c.payment_id]
    ).returning(provider_payments.c.page_token)


def page_url(page_token: str) -> str:
    return f"/provider/pay/{page_token}"


class SimulatedPaymentProvider:
    """Hosted payment pages, signed webhooks, refunds and voids, backed by one table."""

    def __init__(self, engine: AsyncEngine, secret: str, webhook_client: WebhookClient) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        _open_payment(self._dialect)  # an unknown dialect fails here
        # On PostgreSQL a call that is one statement commits by itself (no BEGIN and COMMIT
        # round trips); SQLite's BEGIN is local, and its engines issue it themselves.
        self._one_statement = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._dialect == "postgresql"
            else engine
        )
        self._secret = secret
        self._webhook_client = webhook_client

    async def create_payment(self, request: PaymentRequest) -> str:
        """Open the payment (once per payment ID) and return its hosted page.

        The first call's insert is the whole call: on PostgreSQL one statement that
        commits by itself. A second call with the same ID (a step run again) inserts
        nothing and reads the first call's page token.
        """
        values = {
            "payment_id": request.payment_id,
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "description": request.description,
            "return_url": request.return_url,
            "expires_at": request.expires_at_epoch,
            "status": ProviderState.OPEN.value,
            "created_at": time.time(),
            "page_token": secrets.token_urlsafe(24),
        }
        async with self._one_statement.begin() as conn:
            opened = await conn.execute(_open_payment(self._dialect), values)
            token = opened.scalar_one_or_none()
            if token is None:  # opened before: its token stands
                found = await conn.execute(_PAGE_TOKEN_OF, {"b_payment": request.payment_id})
                token = found.scalar_one()
        return page_url(token)

    async def give_back(self, payment_id: str, idempotency_key: str) -> PaymentGivenBack:
        """Void an open payment, refund a captured one, and leave anything else alone."""
        table = provider_payments
        here = table.c.payment_id == payment_id
        async with self._engine.begin() as conn:
            voided = await conn.execute(
                sa.update(table)
                .where(here, table.c.status == ProviderState.OPEN.value)
                .values(status=ProviderState.VOIDED.value)
            )
            if voided.rowcount == 1:
                return PaymentGivenBack(ProviderState.OPEN, ProviderState.VOIDED)
            refunded = await conn.execute(
                sa.update(table)
                .where(here, table.c.status == ProviderState.CAPTURED.value)
                .values(
                    status=ProviderState.REFUNDED.value,
                    refund_key=idempotency_key,
                    refunds=table.c.refunds + 1,
                )
            )
            if refunded.rowcount == 1:
                reference = f"re_{payment_id}"
                return PaymentGivenBack(ProviderState.CAPTURED, ProviderState.REFUNDED, reference)
            status = (await conn.execute(sa.select(table.c.status).where(here))).scalar()
        state = ProviderState.UNKNOWN if status is None else ProviderState(status)
        reference = f"re_{payment_id}" if state is ProviderState.REFUNDED else ""
        return PaymentGivenBack(state, state, reference)

    async def charge(self, payment_id: str, payer_id: str) -> Charge:
        """Capture an open payment now, or decline it if the payer cannot cover it.

        One conditional UPDATE (open -> captured | declined) decides it once; a second
        call reads that decision back. Marked delivered: nobody waits for a webhook.
        """
        table = provider_payments
        here = table.c.payment_id == payment_id
        decided = (
            ProviderState.DECLINED if payer_id in INSUFFICIENT_FUNDS else ProviderState.CAPTURED
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(table)
                .where(here, table.c.status == ProviderState.OPEN.value)
                .values(
                    status=decided.value,
                    event_id=f"txn_{uuid.uuid4().hex[:16]}",
                    decided_at=time.time(),
                    delivered=True,
                )
            )
            row = (
                await conn.execute(sa.select(table.c.status, table.c.event_id).where(here))
            ).first()
        if row is None:
            return Charge(False, error="unknown_payment", decline_code="NO_SUCH_PAYMENT")
        if row.status in (ProviderState.CAPTURED, ProviderState.REFUNDED):
            return Charge(True, transaction_id=row.event_id)
        if row.status == ProviderState.DECLINED:
            return Charge(
                False,
                transaction_id=row.event_id,
                error="insufficient_funds",
                decline_code="DECLINED",
            )
        return Charge(False, error="payment_closed", decline_code=str(row.status).upper())

    async def payment(self, payment_id: str) -> Any:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(provider_payments).where(provider_payments.c.payment_id == payment_id)
                )
            ).first()

    async def payment_by_page(self, page_token: str) -> Any:
        """The payment whose hosted page this is, with any lapsed deadline recorded."""
        async with self._engine.begin() as conn:
            row = await self._by_page(conn, page_token)
            if row is not None and await self._expire(conn, row):
                row = await self._by_page(conn, page_token)
        return row

    async def decide(self, page_token: str, decision: str) -> Delivery:
        """Capture or decline, then tell the store. Repeating a decision re-delivers it."""
        new_status, _ = DECISIONS[decision]
        table = provider_payments
        async with self._engine.begin() as conn:
            row = await self._by_page(conn, page_token)
            if row is None:
                raise UnknownPaymentPage("This payment does not exist.")
            expired = await self._expire(conn, row)
        if expired:  # recorded first: the refusal must not roll the expiry back
            raise PaymentNotOpen("This payment has expired; the shop stopped waiting.")
        if row.status == ProviderState.OPEN.value:
            async with self._engine.begin() as conn:
                decided = await conn.execute(
                    sa.update(table)
                    .where(table.c.payment_id == row.payment_id, table.c.status == "open")
                    .values(
                        status=new_status.value,
                        event_id=f"evt_{uuid.uuid4().hex}",
                        decided_at=time.time(),
                    )
                )
            if decided.rowcount == 0:
                raise PaymentNotOpen("This payment was decided a moment ago.")
        elif row.status == ProviderState.VOIDED.value:
            raise PaymentNotOpen("The shop cancelled this payment; nothing was charged.")
        elif row.status != new_status.value:
            raise PaymentNotOpen(f"This payment is already {row.status}.")
        return await self._settle(row.payment_id)

    async def _by_page(self, conn: AsyncConnection, page_token: str) -> Any:
        table = provider_payments
        return (
            await conn.execute(sa.select(table).where(table.c.page_token == page_token))
        ).first()

    async def _expire(self, conn: AsyncConnection, row: Any) -> bool:
        """Mark an open payment past its expiry as expired; True if it just expired."""
        if row.status != ProviderState.OPEN.value or time.time() < row.expires_at:
            return False
        table = provider_payments
        result = await conn.execute(
            sa.update(table)
            .where(table.c.payment_id == row.payment_id, table.c.status == "open")
            .values(status=ProviderState.EXPIRED.value)
        )
        return bool(result.rowcount)

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
        body = webhook_body(event_id, payment_id, verdict, amount_cents)
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
