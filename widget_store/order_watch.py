"""Wakes the requests waiting for news of an order, the moment this process commits some.

Every change the saga makes to an order is logged to its event log in the same
transaction. Once a step (or the webhook) has committed, it announces the order, and
anyone long-polling it (`GET /order/{id}?after_events=`) is woken at once; it also
announces the checkout key, which wakes the checkout request waiting for its order to
be placed. Changes another app process commits reach here through PostgreSQL
(news_feed.py), as order IDs; waiters also ask the database from time to time
(`recheck_s`): rarely (a safety net) while that feed is heard or when this process runs
every workflow, often when several processes serve and the feed is down.

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

RECHECK_ALONE_S = 5.0
RECHECK_SHARED_S = 0.5

Key = int | str  # an order ID, or a checkout key
_waiters: defaultdict[Key, set[News]] = defaultdict(set)
_lock = threading.Lock()
_hearing_others = False  # whether news_feed is listening for the other processes' news


def announce(*keys: Key, note: object | None = None) -> None:
    """Wake whoever waits for news of these orders or checkout keys (call after commit).

    `note` is what the announcer knows the news to be (the order as it committed it), for
    a waiter that can use it instead of reading the database; the others ignore it.
    """
    with _lock:
        to_wake = [news for key in keys for news in _waiters.get(key, ())]
    for news in to_wake:
        news._announce(note)


def announce_to_all() -> None:
    """Wake every waiter to read once (news may have been missed: see news_feed.py)."""
    with _lock:
        to_wake = [news for waiting in _waiters.values() for news in waiting]
    for news in to_wake:
        news._announce(None)


def hear_other_processes(hearing: bool) -> None:
    """Say whether the other processes' news reaches `announce` (news_feed.py)."""
    global _hearing_others
    _hearing_others = hearing


def recheck_s(workers: int, *, fed: bool = True) -> float:
    """How often a waiter asks the database, given how many app processes serve.

    `fed`: the news waited for comes through news_feed.py (an order's does; a trip's
    does not).
    """
    if workers <= 1 or (fed and _hearing_others):
        return RECHECK_ALONE_S
    return RECHECK_SHARED_S


class News:
    """A subscription to one order's news, taken *before* reading the order, so that no
    announcement made between the read and the wait is missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._note: object | None = None

    def _announce(self, note: object | None) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop closed: nobody to wake
            self._loop.call_soon_threadsafe(self._noted, note)

    def _noted(self, note: object | None) -> None:
        self._note = note  # the latest news's note, or None if it came without one
        self._event.set()

    def take_note(self) -> object | None:
        """The note that came with the latest news (once), or None."""
        note, self._note = self._note, None
        return note

    async def next(self, timeout_s: float) -> bool:
        """Wait for news announced since the last call: True if some came in time."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True


@contextmanager
def watching(key: Key) -> Iterator[News]:
    news = News()
    with _lock:
        _waiters[key].add(news)
    try:
        yield news
    finally:
        with _lock:
            _waiters[key].discard(news)
            if not _waiters[key]:
                del _waiters[key]
