"""Trips: the trip saga's table and history, the travel services' bookings, and dead
letters that belong to a trip.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trips",
        sa.Column("trip_id", Id, primary_key=True, autoincrement=True),
        sa.Column("trip_key", sa.String(128), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("car_id", sa.String(200), nullable=False),
        sa.Column("hotel_id", sa.String(200), nullable=False),
        sa.Column("flight_id", sa.String(200), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("car_confirmation", sa.String(32)),
        sa.Column("hotel_confirmation", sa.String(32)),
        sa.Column("flight_confirmation", sa.String(32)),
        sa.Column("access_token", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_trips_status", "trips", ["status"])
    op.create_table(
        "trip_events",
        sa.Column("event_id", Id, primary_key=True, autoincrement=True),
        sa.Column("trip_id", Id, sa.ForeignKey("trips.trip_id"), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("once_key", sa.String(64)),
        sa.UniqueConstraint("trip_id", "once_key", name="uq_trip_events_once"),
    )
    op.create_index("ix_trip_events_trip", "trip_events", ["trip_id", "event_id"])
    # The simulated travel services' own table (widget_store/simulated/travel.py).
    op.create_table(
        "travel_bookings",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("booking_key", sa.String(200), primary_key=True),
        sa.Column("trip_id", sa.String(200), nullable=True),
        sa.Column("item_id", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("confirmation", sa.String(32), nullable=True, unique=True),
        sa.Column("book_calls", sa.Integer, nullable=False),
        sa.Column("cancel_calls", sa.Integer, nullable=False),
        sa.Column("repeated_calls", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_travel_bookings_trip_id", "travel_bookings", ["trip_id"])
    # A dead letter belongs to an order or, now, to a trip (batch: SQLite rebuilds it).
    with op.batch_alter_table("dead_letters") as batch:
        batch.alter_column("order_id", existing_type=Id, nullable=True)
        batch.add_column(sa.Column("trip_id", Id, nullable=True))
        batch.create_foreign_key("fk_dead_letters_trip", "trips", ["trip_id"], ["trip_id"])
        batch.create_unique_constraint(
            "uq_dead_letters_trip_compensation", ["trip_id", "compensation"]
        )


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_constraint("uq_dead_letters_trip_compensation", type_="unique")
        batch.drop_constraint("fk_dead_letters_trip", type_="foreignkey")
        batch.drop_column("trip_id")
        batch.alter_column("order_id", existing_type=Id, nullable=False)
    op.drop_index("ix_travel_bookings_trip_id", table_name="travel_bookings")
    op.drop_table("travel_bookings")
    op.drop_index("ix_trip_events_trip", table_name="trip_events")
    op.drop_table("trip_events")
    op.drop_index("ix_trips_status", table_name="trips")
    op.drop_table("trips")
