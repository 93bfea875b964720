"""Order news across processes: an entry in an order's log is announced on the
`widget_store_order_news` channel when its transaction commits, if the session writing
it asked for that (`widget_store.announce` set to `on`: the store's connections do when
several app processes serve).

Each app process then listens (widget_store/news_feed.py) and wakes its own requests
waiting on that order, so a long poll served by one process learns at once of a change
another process committed. The payload is the order's ID; PostgreSQL delivers one copy
per order and transaction, however many entries it wrote. A NOTIFY is not free (the
commits that notify take a lock in turn), so a store of one process, which has nobody
to tell, sends none. SQLite has one process, so nothing is needed there.

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
ANNOUNCE = "widget_store.announce"  # a session's setting: whether its entries are announced


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION widget_store_announce_order() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('{ANNOUNCE}', true) = 'on' THEN
                PERFORM pg_notify('{CHANNEL}', NEW.order_id::text);
            END IF;
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
