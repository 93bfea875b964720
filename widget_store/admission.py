"""How much work one process takes on at once, and whether that work is moving.

- **Admission.** Starting a checkout is the write-heavy part of it (the workflow's start,
  `place_order`, the payment's page). On the embedded SQLite file every write takes the
  one write lock in turn, so a burst of 64 starts made each wait its turn for 10-20 s,
  close to the 30 s busy timeout past which writes fail. So a process lets a bounded
  number of checkouts start at once; the next ones wait briefly for a place and are then
  refused with 503 and `Retry-After` (the store's pages retry by themselves, with the
  same key). PostgreSQL takes concurrent writers, so it is unbounded by default.
- **Progress.** `/healthz` reads the database, which on SQLite answers even while no
  writer can get the lock: a wedged store looked healthy. So every unit of work that
  moves orders along (a checkout start, a webhook's verdict, each attempt of each saga
  step) is counted while it runs, and the health check fails when work has been in
  flight for a while and none of it has *finished well* (a result, or a domain answer
  such as out of stock) since. It costs a lock and two counters per unit of work, and
  no query. A store that is idle, or slow but finishing things, stays healthy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from widget_store.domain import CheckoutStillStarting, StoreBusy, StoreError

# How long a checkout waits for a place among those starting before it is refused.
ADMISSION_WAIT_S = 0.5


class Progress:
    """Work in flight in this process, and when some of it last finished well.

    Thread-safe: steps of recovered workflows run on DBOS's own event loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._since = clock()  # when work last finished well, or began after a lull

    @contextmanager
    def working(self) -> Iterator[None]:
        """Count the block as work in flight; it is progress if it ends well."""
        with self._lock:
            if self._in_flight == 0:
                self._since = self._clock()
            self._in_flight += 1
        finished_well = False
        try:
            yield
            finished_well = True
        except CheckoutStillStarting:
            raise  # gave up waiting: that is the opposite of progress
        except StoreError:
            finished_well = True  # a domain answer (out of stock, say) is the store working
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                if finished_well:
                    self._since = self._clock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stalled_for(self) -> float:
        """Seconds that work has been in flight with none of it finishing well (0: moving)."""
        with self._lock:
            return self._clock() - self._since if self._in_flight else 0.0


class Admission:
    """At most `limit` checkouts start at once in this process (None: no bound)."""

    def __init__(self, limit: int | None, wait_s: float = ADMISSION_WAIT_S) -> None:
        self.limit = limit
        self._wait_s = wait_s
        self._places = asyncio.Semaphore(limit) if limit else None

    @asynccontextmanager
    async def starting(self) -> AsyncIterator[None]:
        """A place among the checkouts starting, or StoreBusy after a short wait."""
        if self._places is None:
            yield
            return
        try:
            await asyncio.wait_for(self._places.acquire(), self._wait_s)
        except TimeoutError:
            raise StoreBusy(
                f"the store is busy: {self.limit} checkouts are already starting; "
                "retry in a moment with the same idempotency key"
            ) from None
        try:
            yield
        finally:
            self._places.release()
