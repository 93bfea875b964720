"""Wakes the requests waiting for news of an order, the moment this process logs some.

Every change the saga makes to an order is logged to its event log in the same
transaction. While a step's transaction runs, the orders it logs to are collected; once
it has committed, anyone long-polling one of those orders (`GET /order/{id}?after_events=`)
is woken at once. Changes made by another app process are not seen here, so waiters
also ask the database from time to time (`recheck_s`): often when several processes
serve, rarely (a safety net) when this one runs every workflow.

Workflows may run on another thread's event loop than the request waiting for them (DBOS
runs the workflows it recovers on a loop of its own), so an announcement is handed to the
waiter's loop, never set on it from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

RECHECK_ALONE_S = 5.0
RECHECK_SHARED_S = 0.5

_touched: ContextVar[set[int] | None] = ContextVar("orders_touched", default=None)
_waiters: defaultdict[int, set[News]] = defaultdict(set)
_lock = threading.Lock()


def touched(order_id: int) -> None:
    """Note, inside a transaction, that it logs a change to this order."""
    orders = _touched.get()
    if orders is not None:
        orders.add(order_id)


@contextmanager
def collecting() -> Iterator[set[int]]:
    """Collect the orders a transaction touches, to announce once it has committed."""
    orders: set[int] = set()
    token = _touched.set(orders)
    try:
        yield orders
    finally:
        _touched.reset(token)


def announce(order_ids: set[int]) -> None:
    with _lock:
        to_wake = [news for order_id in order_ids for news in _waiters.get(order_id, ())]
    for news in to_wake:
        news._announce()


def recheck_s(workers: int) -> float:
    """How often a waiter asks the database, given how many app processes serve."""
    return RECHECK_ALONE_S if workers <= 1 else RECHECK_SHARED_S


class News:
    """A subscription to one order's news, taken *before* reading the order, so that no
    announcement made between the read and the wait is missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def _announce(self) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop closed: nobody to wake
            self._loop.call_soon_threadsafe(self._event.set)

    async def next(self, timeout_s: float) -> bool:
        """Wait for news announced since the last call: True if some came in time."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True


@contextmanager
def watching(order_id: int) -> Iterator[News]:
    news = News()
    with _lock:
        _waiters[order_id].add(news)
    try:
        yield news
    finally:
        with _lock:
            _waiters[order_id].discard(news)
            if not _waiters[order_id]:
                del _waiters[order_id]
