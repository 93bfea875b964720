"""Order news from the other app processes, heard through PostgreSQL's LISTEN/NOTIFY.

When several app processes serve, every entry they write to an order's log is announced
on a channel when its transaction commits (a trigger, migrations/versions/0007_order_news.py,
for the sessions that ask for it: `announcing`, on the store's engine). Each process keeps one
connection listening there and hands each order ID to `order_watch`, which wakes the
requests of this process waiting on that order. So a long poll learns of a change the
moment it commits, whichever process committed it, and the waiters fall back to asking
the database every `RECHECK_SHARED_S` only while this feed is down.

A process also hears its own news this way, after `order_watch.announce` already woke
its waiters: the second wake costs a waiter at most one more read of the order.

Announcements are not stored: whatever committed while the connection was being
re-made is lost, so once listening again the feed wakes every waiter to read once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from widget_store import order_watch

log = logging.getLogger("widget_store.news_feed")

CHANNEL = "widget_store_order_news"  # as in migration 0007
ANNOUNCE = "widget_store.announce"  # the session setting the trigger reads


def announcing(workers: int) -> dict[str, str]:
    """The server settings a store connection takes: its order news announced to the other
    processes if there are any (one process has nobody to tell, and a NOTIFY costs)."""
    return {ANNOUNCE: "on"} if workers > 1 else {}


CHECK_S = 30.0  # how often an idle listening connection is asked whether it still answers
RETRY_S = 1.0


class NewsFeed:
    """Listens for order news while `run()` runs (until cancelled)."""

    def __init__(self, async_url: str, *, name: str = "widget-store-news") -> None:
        self._url = async_url
        self._name = name
        self.heard = 0  # announcements received, for tests

    async def run(self) -> None:
        # Its own connection, outside the store's pool: it is held for as long as it lives.
        engine = create_async_engine(
            self._url,
            poolclass=sa.pool.NullPool,
            connect_args={"server_settings": {"application_name": self._name}},
        )
        try:
            while True:
                try:
                    await self._listen(engine)
                except (sa.exc.DBAPIError, OSError) as error:
                    log.warning("%s: database error (%s); listening again", self._name, error)
                except Exception:
                    log.exception("%s: failed; listening again", self._name)
                finally:
                    order_watch.hear_other_processes(False)
                await asyncio.sleep(RETRY_S)
        finally:
            await engine.dispose()

    async def _listen(self, engine: Any) -> None:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            listener = raw.driver_connection  # the asyncpg connection
            lost = asyncio.Event()
            listener.add_termination_listener(lambda _conn: lost.set())
            await listener.add_listener(CHANNEL, self._heard)
            order_watch.hear_other_processes(True)
            order_watch.announce_to_all()  # anything committed while nobody listened
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), CHECK_S)
                except TimeoutError:
                    await listener.execute("SELECT 1")  # raises if the server is gone

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.heard += 1
        try:
            order_id = int(payload)
        except ValueError:
            log.warning("%s: ignoring a payload that is not an order ID: %r", self._name, payload)
            return
        order_watch.announce(order_id)
