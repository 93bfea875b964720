"""Order news across processes: every entry in an order's log is announced on the
`widget_store_order_news` channel when its transaction commits.

Each app process listens (widget_store/news_feed.py) and wakes its own requests
waiting on that order, so a long poll served by one process learns at once of a change
another process committed. The payload is the order's ID; PostgreSQL delivers one copy
per order and transaction, however many entries it wrote. SQLite has one process, so
nothing is needed there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "widget_store_order_news"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION widget_store_announce_order() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.order_id::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER order_events_announce AFTER INSERT ON order_events
        FOR EACH ROW EXECUTE FUNCTION widget_store_announce_order()
        """
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER order_events_announce ON order_events")
    op.execute("DROP FUNCTION widget_store_announce_order()")
