"""The transactional outbox: order (and trip) events waiting for the broker.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("outbox_id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("aggregate", sa.String(16), nullable=False),
        sa.Column("aggregate_id", Id, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("sent_at", Timestamp),
        sa.UniqueConstraint("aggregate", "aggregate_id", "seq", name="uq_outbox_aggregate_seq"),
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["outbox_id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "outbox_sequences",
        sa.Column("aggregate", sa.String(16), primary_key=True),
        sa.Column("aggregate_id", Id, primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_sequences")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
