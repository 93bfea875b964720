"""Order news: a long poll is woken by a committed change, whichever thread made it."""

from __future__ import annotations

import asyncio
import threading

from widget_store import order_watch


def test_a_waiter_hears_news_announced_before_it_started_waiting() -> None:
    async def scenario() -> bool:
        with order_watch.watching(7) as news:
            order_watch.announce(7)  # between reading the order and waiting
            return await news.next(1.0)

    assert asyncio.run(scenario()) is True


def test_news_from_another_thread_wakes_the_waiter() -> None:
    async def scenario() -> bool:
        with order_watch.watching(8) as news:
            threading.Timer(0.05, order_watch.announce, args=(8,)).start()
            return await news.next(5.0)

    assert asyncio.run(scenario()) is True


def test_news_of_another_order_does_not_wake_the_waiter() -> None:
    async def scenario() -> bool:
        with order_watch.watching(9) as news:
            order_watch.announce(10)
            return await news.next(0.05)

    assert asyncio.run(scenario()) is False


def test_a_finished_waiter_is_forgotten() -> None:
    async def scenario() -> None:
        with order_watch.watching(11):
            pass

    asyncio.run(scenario())
    order_watch.announce(11)  # nobody left to wake, and no error
    assert 11 not in order_watch._waiters


def test_a_checkout_key_is_news_of_its_own() -> None:
    async def scenario() -> tuple[bool, bool]:
        with order_watch.watching("cart-1") as news:
            order_watch.announce(1)
            by_order = await news.next(0.05)
            order_watch.announce("cart-1")
            return by_order, await news.next(1.0)

    assert asyncio.run(scenario()) == (False, True)


def test_a_single_process_rechecks_rarely_and_several_often() -> None:
    assert order_watch.recheck_s(1) > order_watch.recheck_s(2)
