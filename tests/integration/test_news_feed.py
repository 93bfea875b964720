"""An order's news reaches this process's waiters whichever process committed it
(PostgreSQL's LISTEN/NOTIFY, news_feed.py): nothing in these tests announces locally,
so a waiter that wakes was woken by the feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import make_settings
from tests.helpers import new_order
from widget_store import order_watch, queries
from widget_store.config import Database
from widget_store.domain import OrderEvent
from widget_store.durability import create_store_engine
from widget_store.news_feed import NewsFeed, announcing

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FEED_NAME = "widget-store-news-under-test"
WAKE_S = 10.0  # generous: a wake either comes or it does not


async def until(condition: object, timeout_s: float = WAKE_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def hearing() -> bool:
    return order_watch.recheck_s(2) == order_watch.RECHECK_ALONE_S


@asynccontextmanager
async def feed_and_other_process(
    url: str, workers: int = 2
) -> AsyncIterator[tuple[NewsFeed, AsyncEngine]]:
    """A running feed, and an engine standing for another app process's writes, made as
    the store makes its engine when `workers` processes serve."""
    async_url = Database.parse(url).async_url
    feed = NewsFeed(async_url, name=FEED_NAME)
    listening = asyncio.create_task(feed.run())
    other = create_async_engine(async_url, connect_args={"server_settings": announcing(workers)})
    try:
        await until(hearing)
        yield feed, other
    finally:
        listening.cancel()
        await asyncio.wait([listening])
        await other.dispose()


async def place(engine: AsyncEngine, key: str) -> int:
    async with engine.begin() as conn:
        return await new_order(conn, key)


async def log(engine: AsyncEngine, order_id: int, event: OrderEvent) -> None:
    async with engine.begin() as conn:
        await queries.append_event(conn, order_id, event)


def test_an_entry_another_process_commits_wakes_the_requests_waiting_on_that_order(
    postgres_url: str,
) -> None:
    async def scenario() -> tuple[bool, bool]:
        async with feed_and_other_process(postgres_url) as (_feed, other):
            watched, unwatched = await place(other, "watched"), await place(other, "other")
            with (
                order_watch.watching(watched) as news,
                order_watch.watching(unwatched) as other_news,
            ):
                await log(other, watched, OrderEvent.ORDER_CREATED)
                woken = await news.next(WAKE_S)
                others_woken = await other_news.next(0.5)
            return woken, others_woken

    woken, others_woken = asyncio.run(scenario())
    assert woken, "the waiter on the order heard the other process's commit"
    assert not others_woken, "a waiter on another order was left alone"


def test_the_feed_is_heard_once_per_transaction_and_only_after_commit(postgres_url: str) -> None:
    async def scenario() -> tuple[bool, bool, int]:
        async with feed_and_other_process(postgres_url) as (feed, other):
            order_id = await place(other, "batched")
            await asyncio.sleep(0.2)
            heard_before = feed.heard
            with order_watch.watching(order_id) as news:
                async with other.begin() as conn:
                    await queries.append_event(conn, order_id, OrderEvent.ORDER_CREATED)
                    await queries.append_event(conn, order_id, OrderEvent.RESERVED)
                    before_commit = await news.next(0.5)
                after_commit = await news.next(WAKE_S)
                await asyncio.sleep(0.3)  # a second copy would have arrived by now
            return before_commit, after_commit, feed.heard - heard_before

    before_commit, after_commit, heard = asyncio.run(scenario())
    assert not before_commit and after_commit
    assert heard == 1, "two entries in one transaction: one announcement"


def test_a_feed_whose_connection_is_cut_falls_back_to_rechecking_then_listens_again(
    postgres_url: str,
) -> None:
    async def scenario() -> tuple[float, bool]:
        async with feed_and_other_process(postgres_url) as (_feed, other):
            order_id = await place(other, "cut")
            with order_watch.watching(order_id) as news:
                async with other.connect() as conn:
                    await conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": FEED_NAME},
                    )
                    await conn.commit()
                await until(lambda: not hearing())
                while_cut = order_watch.recheck_s(2)
                # Back, it wakes every waiter once: it cannot know what it missed.
                woken_on_return = await news.next(WAKE_S)
                await until(hearing)
            return while_cut, woken_on_return

    while_cut, woken_on_return = asyncio.run(scenario())
    assert while_cut == order_watch.RECHECK_SHARED_S
    assert woken_on_return


def test_a_store_of_one_process_announces_nothing(postgres_url: str) -> None:
    async def scenario() -> tuple[bool, int]:
        async with feed_and_other_process(postgres_url, workers=1) as (feed, alone):
            order_id = await place(alone, "alone")
            with order_watch.watching(order_id) as news:
                await log(alone, order_id, OrderEvent.ORDER_CREATED)
                woken = await news.next(1.0)
            return woken, feed.heard

    woken, heard = asyncio.run(scenario())
    assert not woken and heard == 0, "one process has nobody to tell: no NOTIFY"


@pytest.mark.parametrize(("workers", "asked"), [(1, None), (2, "on")])
def test_the_stores_engine_asks_for_announcements_only_when_several_processes_serve(
    postgres_url: str, workers: int, asked: str | None
) -> None:
    settings = make_settings(postgres_url, workers=workers)

    async def scenario() -> str | None:
        engine = create_store_engine(settings)
        try:
            async with engine.connect() as conn:
                setting: str | None = await conn.scalar(
                    sa.text("SELECT current_setting('widget_store.announce', true)")
                )
                return setting
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == asked
