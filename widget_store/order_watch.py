"""Wakes the requests waiting for news of an order, the moment this process logs some.

Every change the saga makes to an order is logged to its event log in the same
transaction. While a step's transaction runs, the orders it logs to are collected; once
it has committed, anyone long-polling one of those orders (`GET /order/{id}?after_events=`)
is woken at once. Changes made by another app process are not seen here: waiters also
re-read the database every `RECHECK_S`, so they learn of those a little later.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

RECHECK_S = 0.25

_touched: ContextVar[set[int] | None] = ContextVar("orders_touched", default=None)
_waiters: defaultdict[int, set[asyncio.Event]] = defaultdict(set)


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
    for order_id in order_ids:
        for waiter in _waiters.get(order_id, ()):
            waiter.set()


async def wait(order_id: int, timeout_s: float) -> None:
    """Return when this process announces news of the order, or after `timeout_s`."""
    event = asyncio.Event()
    _waiters[order_id].add(event)
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        pass
    finally:
        _waiters[order_id].discard(event)
        if not _waiters[order_id]:
            del _waiters[order_id]
