"""The store's tables, as SQLAlchemy Core: the Alembic target metadata.

The simulated payment provider and carrier keep their own tables in their own modules;
they are outside services that happen to share the database in this demo.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants a BIGINT.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


products = sa.Table(
    "products",
    metadata,
    sa.Column("product_id", Id, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("inventory", sa.Integer, nullable=False),
    # The last line of defence against overselling: stock can never go negative.
    sa.CheckConstraint("inventory >= 0", name="ck_products_inventory_not_negative"),
    sa.CheckConstraint("price_cents > 0", name="ck_products_price_positive"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", Id, primary_key=True, autoincrement=True),
    # The client's idempotency key, which is also the checkout workflow's ID.
    sa.Column("checkout_key", sa.String(128), nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cancel_reason", sa.Text),
    sa.Column("total_cents", sa.Integer, nullable=False),
    sa.Column("shipping_address", sa.Text, nullable=False),
    sa.Column("payment_id", sa.String(64), nullable=False, unique=True),
    # awaiting -> paid | failed | timed_out, by one conditional UPDATE (see queries).
    sa.Column("payment_verdict", sa.String(16)),
    sa.Column("payment_deadline", UTCDateTime),
    sa.Column("payment_event_id", sa.String(200)),
    # captured -> refunded | voided | untouched: the money, as the store knows it.
    sa.Column("payment_state", sa.String(16)),
    # The hosted payment page the shopper was sent to (it holds the page's own token).
    sa.Column("payment_url", sa.Text),
    # none -> held -> released, or none -> short: the stock actually held for this order.
    sa.Column("reservation", sa.String(16), nullable=False, server_default="none"),
    # The lines the shelves could not fill (JSON), for the out-of-stock answer.
    sa.Column("short_items", sa.Text),
    # Whoever placed the order holds this token; in production reads need it.
    sa.Column("access_token", sa.String(64)),
    sa.Column("tracking_number", sa.String(64)),
    sa.Column("dispatch_eta", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_orders_status", "status"),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column("order_id", Id, sa.ForeignKey("orders.order_id"), primary_key=True),
    sa.Column("product_id", Id, sa.ForeignKey("products.product_id"), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_cents", sa.Integer, nullable=False),
    sa.CheckConstraint("quantity > 0", name="ck_order_items_quantity_positive"),
)

order_events = sa.Table(
    "order_events",
    metadata,
    sa.Column("event_id", Id, primary_key=True, autoincrement=True),
    sa.Column("order_id", Id, sa.ForeignKey("orders.order_id"), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("at", UTCDateTime, nullable=False),
    # What makes an entry once-only: a step that runs again after a crash (it committed,
    # then died before DBOS checkpointed it) logs nothing twice. Null: may repeat.
    sa.Column("once_key", sa.String(64)),
    sa.Index("ix_order_events_order", "order_id", "event_id"),
    sa.UniqueConstraint("order_id", "once_key", name="uq_order_events_once"),
)

# Every signed webhook event the store has acted on, and the payment it was about: an
# event ID seen for one payment is refused for any other.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("payment_id", sa.String(64), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

# One trip (widget_store/trip.py): a car, a hotel and a flight, all booked or none.
trips = sa.Table(
    "trips",
    metadata,
    sa.Column("trip_id", Id, primary_key=True, autoincrement=True),
    # The client's idempotency key, which is also the trip workflow's ID.
    sa.Column("trip_key", sa.String(128), nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("car_id", sa.String(200), nullable=False),
    sa.Column("hotel_id", sa.String(200), nullable=False),
    sa.Column("flight_id", sa.String(200), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # PENDING -> BOOKED | ROLLED_BACK, by conditional UPDATEs.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),  # why it was rolled back
    # What each service confirmed (kept after a rollback: the cancelled booking's number).
    sa.Column("car_confirmation", sa.String(32)),
    sa.Column("hotel_confirmation", sa.String(32)),
    sa.Column("flight_confirmation", sa.String(32)),
    # Whoever booked the trip holds this token; in production reads need it.
    sa.Column("access_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_trips_status", "status"),
)

# A trip's history, like order_events: once per (trip, once_key).
trip_events = sa.Table(
    "trip_events",
    metadata,
    sa.Column("event_id", Id, primary_key=True, autoincrement=True),
    sa.Column("trip_id", Id, sa.ForeignKey("trips.trip_id"), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("once_key", sa.String(64)),
    sa.Index("ix_trip_events_trip", "trip_id", "event_id"),
    sa.UniqueConstraint("trip_id", "once_key", name="uq_trip_events_once"),
)

# Compensations that kept failing and wait for an operator (or the next automatic retry):
# an order's or a trip's (exactly one of the two is set).
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("dead_letter_id", Id, primary_key=True, autoincrement=True),
    sa.Column("order_id", Id, sa.ForeignKey("orders.order_id"), nullable=True),
    sa.Column(
        "trip_id", Id, sa.ForeignKey("trips.trip_id", name="fk_dead_letters_trip"), nullable=True
    ),
    sa.Column("workflow_id", sa.String(128), nullable=False),
    sa.Column("compensation", sa.String(64), nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # parked -> retrying -> resolved (or parked again)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("parked_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("order_id", "compensation", name="uq_dead_letters_order_compensation"),
    sa.UniqueConstraint("trip_id", "compensation", name="uq_dead_letters_trip_compensation"),
)

# The transactional outbox: each state change's event, written in the change's own
# transaction, until the relay has it acknowledged by the broker (see widget_store/relay.py).
outbox = sa.Table(
    "outbox",
    metadata,
    # Insertion order: the relay's scan order. Within one aggregate it follows `seq`,
    # because the next sequence number is taken under the counter's row lock.
    sa.Column("outbox_id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),  # the Nats-Msg-Id
    sa.Column("aggregate", sa.String(16), nullable=False),  # events.Aggregate: order, trip
    sa.Column("aggregate_id", Id, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # compact JSON, no payment data
    sa.Column("sent_at", UTCDateTime),  # null until the broker acknowledged it
    sa.UniqueConstraint("aggregate", "aggregate_id", "seq", name="uq_outbox_aggregate_seq"),
    # Only unsent rows are indexed, so the relay's "oldest unsent" stays a short scan
    # however long the outbox grows.
    sa.Index(
        "ix_outbox_unsent",
        "outbox_id",
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    ),
)

# The last sequence number given to each aggregate's events. One upsert bumps it, so two
# transactions writing events for the same order queue on this row's lock instead of
# both reading the same MAX(seq) and one failing on the unique key.
outbox_sequences = sa.Table(
    "outbox_sequences",
    metadata,
    sa.Column("aggregate", sa.String(16), primary_key=True),
    sa.Column("aggregate_id", Id, primary_key=True),
    sa.Column("last_seq", sa.Integer, nullable=False),
)
