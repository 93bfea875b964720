"""The store's tables, the simulated provider's and carrier's, and a seeded catalog.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

CATALOG = [
    ("WID-CLASSIC", "Classic Widget", "The original durable widget. Survives anything.", 1500, 100),
    ("WID-GEAR", "Gear Widget", "A brass gear that never slips a tooth.", 2500, 50),
    ("WID-SPRING", "Spring Widget", "Bounces back from every crash.", 900, 200),
    ("WID-LAMP", "Lamp Widget", "A tiny lamp that stays lit through restarts.", 4200, 10),
]


def upgrade() -> None:
    products = op.create_table(
        "products",
        sa.Column("product_id", Id, primary_key=True, autoincrement=True),
        sa.Column("sku", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.Column("inventory", sa.Integer, nullable=False),
        sa.CheckConstraint("inventory >= 0", name="ck_products_inventory_not_negative"),
        sa.CheckConstraint("price_cents > 0", name="ck_products_price_positive"),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", Id, primary_key=True, autoincrement=True),
        sa.Column("checkout_key", sa.String(128), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_reason", sa.Text),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("shipping_address", sa.Text, nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False, unique=True),
        sa.Column("payment_verdict", sa.String(16)),
        sa.Column("payment_deadline", Timestamp),
        sa.Column("payment_event_id", sa.String(200)),
        sa.Column("payment_state", sa.String(16)),
        sa.Column("reservation", sa.String(16), nullable=False, server_default="none"),
        sa.Column("tracking_number", sa.String(64)),
        sa.Column("dispatch_eta", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_table(
        "order_items",
        sa.Column("order_id", Id, sa.ForeignKey("orders.order_id"), primary_key=True),
        sa.Column("product_id", Id, sa.ForeignKey("products.product_id"), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_order_items_quantity_positive"),
    )
    op.create_table(
        "order_events",
        sa.Column("event_id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_id", Id, sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("at", Timestamp, nullable=False),
    )
    op.create_index("ix_order_events_order", "order_events", ["order_id", "event_id"])
    op.create_table(
        "provider_payments",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("return_url", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(64)),
        sa.Column("refund_key", sa.String(200)),
        sa.Column("refunds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "carrier_shipments",
        sa.Column("shipment_key", sa.String(64), primary_key=True),
        sa.Column("tracking_number", sa.String(64), nullable=False, unique=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.bulk_insert(
        products,
        [
            {"sku": s, "name": n, "description": d, "price_cents": p, "inventory": i}
            for s, n, d, p, i in CATALOG
        ],
    )


def downgrade() -> None:
    for table in (
        "carrier_shipments",
        "provider_payments",
        "order_events",
        "order_items",
        "orders",
        "products",
    ):
        op.drop_table(table)
