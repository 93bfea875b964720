"""Checkout v2: once-only log entries, order tokens, the payment page's own link, seen webhooks.

- order_events.once_key, unique per order: a step that runs again logs nothing twice.
  Existing entries get their type as the key (the first of each type per order), so a
  version 0.1 checkout finishing under this version logs nothing twice either.
- orders.access_token (existing orders get one; their shoppers were never given it, so
  in production only the admin token reads them), orders.payment_url, orders.short_items.
- provider_payments.page_token: the hosted page is reached by it, never the payment ID.
- webhook_events: an event ID acted on for one payment is refused for any other.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
REPEATABLE = ("Compensation_parked", "Compensation_retried")


def upgrade() -> None:
    with op.batch_alter_table("order_events") as table:
        table.add_column(sa.Column("once_key", sa.String(64)))
        table.create_unique_constraint("uq_order_events_once", ["order_id", "once_key"])
    with op.batch_alter_table("orders") as table:
        table.add_column(sa.Column("payment_url", sa.Text))
        table.add_column(sa.Column("short_items", sa.Text))
        table.add_column(sa.Column("access_token", sa.String(64)))
    with op.batch_alter_table("provider_payments") as table:
        table.add_column(sa.Column("page_token", sa.String(64)))
        table.create_unique_constraint("uq_provider_payments_page_token", ["page_token"])
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
    )
    _backfill()


def _backfill() -> None:
    bind = op.get_bind()
    repeatable = ", ".join(f"'{t}'" for t in REPEATABLE)
    bind.execute(
        sa.text(
            "UPDATE order_events SET once_key = type WHERE event_id IN "
            "(SELECT MIN(event_id) FROM order_events GROUP BY order_id, type) "
            f"AND type NOT IN ({repeatable})"
        )
    )
    for (payment_id,) in bind.execute(sa.text("SELECT payment_id FROM provider_payments")):
        bind.execute(
            sa.text("UPDATE provider_payments SET page_token = :t WHERE payment_id = :p"),
            {"t": secrets.token_urlsafe(24), "p": payment_id},
        )
    bind.execute(
        sa.text(
            "UPDATE orders SET payment_url = (SELECT '/provider/pay/' || p.page_token "
            "FROM provider_payments p WHERE p.payment_id = orders.payment_id)"
        )
    )
    for (order_id,) in bind.execute(sa.text("SELECT order_id FROM orders")):
        bind.execute(
            sa.text("UPDATE orders SET access_token = :t WHERE order_id = :o"),
            {"t": secrets.token_urlsafe(24), "o": order_id},
        )


def downgrade() -> None:
    op.drop_table("webhook_events")
    with op.batch_alter_table("provider_payments") as table:
        table.drop_constraint("uq_provider_payments_page_token", type_="unique")
        table.drop_column("page_token")
    with op.batch_alter_table("orders") as table:
        table.drop_column("access_token")
        table.drop_column("short_items")
        table.drop_column("payment_url")
    with op.batch_alter_table("order_events") as table:
        table.drop_constraint("uq_order_events_once", type_="unique")
        table.drop_column("once_key")
