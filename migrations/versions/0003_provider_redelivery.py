"""The simulated provider keeps delivering a decision until the shop answers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_payments") as table:
        table.add_column(sa.Column("decided_at", sa.Float))
        table.add_column(
            sa.Column("delivered", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_payments") as table:
        table.drop_column("delivered")
        table.drop_column("decided_at")
