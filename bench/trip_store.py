"""The benchmark's handle on the store side of the trip saga: `widget-store serve` on a private
PostgreSQL (as `bench.store.BenchStore` runs it), driven over HTTP like any client.

The store side of issue 12: `POST /trips/{idempotency_key}` runs the trip saga
(`widget_store/trip.py`) and answers once the trip is booked or rolled back. The store's
migrations create `travel_bookings` (`widget_store.simulated.travel`) in its database,
where `counts()` reads it, and its legs back off as `bench.temporal_trip.shared.TripPolicy`
does (`widget_store.trip_steps.RETRY_FIRST_S`, `RETRY_MAX_S`; a unit test keeps them
equal), so the latency columns compare engines rather than backoffs. A reply other than
200 while the trip is still running (503, or a connection cut by a kill -9) is asked
again under the same key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.metrics import leaf_processes
from bench.store import BenchStore, StoreOptions
from bench.trip_load import TripOrder, TripOutcome, postgres_pids
from widget_store.simulated.travel import (
    TRIP_LEGS,
    TravelCounts,
    TravelServiceUnavailable,
    read_travel_counts,
    travel_services,
)
from widget_store.trip_steps import RETRY_FIRST_S

TRIPS_PATH = "/trips/{idempotency_key}"
# A trip whose reply is lost (its worker killed under the request) is asked for again under
# its key this often, for at most this long.
ASK_AGAIN_S = 0.02
BOOK_TIMEOUT_S = 120.0


class StoreTrips:
    """The trip saga on the store (a `TripSystem`); see the module docstring."""

    name = "store"

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._store: BenchStore | None = None
        self._http: aiohttp.ClientSession | None = None
        self._engine: AsyncEngine | None = None

    async def start(self) -> None:
        """Serve the store on a private PostgreSQL; NotImplementedError without the endpoint."""
        self._store = await asyncio.to_thread(BenchStore, StoreOptions(workers=self.workers))
        try:
            await asyncio.to_thread(self._store.__enter__)
            paths = self._store.server.http.get("/openapi.json").json()["paths"]
            if TRIPS_PATH not in paths:
                raise NotImplementedError(
                    f"the store has no POST {TRIPS_PATH} yet (issue 12; see bench/trip_store.py)"
                )
        except BaseException:
            await self.stop()
            raise
        # The client the shoppers use too: cheap on the cores it shares with the store.
        self._http = aiohttp.ClientSession(
            self._store.base_url,
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self._engine = create_async_engine(self._store.database.async_url)

    async def book(self, order: TripOrder) -> TripOutcome:
        """POST the trip and wait for its reply; through a crash, POST again with its key."""
        assert self._http is not None
        deadline = time.monotonic() + BOOK_TIMEOUT_S
        while True:
            try:
                async with self._http.post(f"/trips/{order.key}", json=order.body()) as response:
                    reply = await response.json() if response.status == 200 else None
                    if 400 <= response.status < 500:  # wrong: asking again won't help
                        response.raise_for_status()
                if reply is not None:
                    return TripOutcome(
                        trip_id=str(reply["trip_id"]),
                        status=reply["status"],
                        bookings=reply["bookings"],
                        cancelled=reply["cancelled"],
                    )
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                pass  # the worker died under this request
            if time.monotonic() > deadline:
                raise TimeoutError(f"no outcome for trip {order.key} in {BOOK_TIMEOUT_S:g} s")
            await asyncio.sleep(ASK_AGAIN_S)

    async def services_alone(self, trips: int) -> list[float]:
        """The floor under any engine's latency: the three services called straight from
        here, one trip after another, as a saga calls them (the hotel's first try fails,
        then 10 ms of backoff), with no engine around them; each trip's milliseconds."""
        assert self._engine is not None
        services = travel_services(self._engine)
        took = []
        for _ in range(trips):
            key = f"floor-{uuid.uuid4().hex}"
            started = time.perf_counter()
            for leg in TRIP_LEGS:
                try:
                    await services[leg].book(f"{key}:{leg}", f"{leg}-item", key)
                except TravelServiceUnavailable:
                    await asyncio.sleep(RETRY_FIRST_S)
                    await services[leg].book(f"{key}:{leg}", f"{leg}-item", key)
            took.append((time.perf_counter() - started) * 1000)
        return took

    def pids(self) -> list[int]:
        """The store's server processes (the supervisor and its app workers)."""
        assert self._store is not None
        return self._store.pids()

    def database_pids(self) -> list[int]:
        """The store's PostgreSQL (DBOS's checkpoints and the travel services' table)."""
        cluster = self._store.cluster if self._store else None
        return postgres_pids(cluster.data) if cluster else []

    async def kill_worker(self) -> None:
        """kill -9 the app process; its supervisor starts another. With several, every one
        of them at once: any of them may hold the trips in flight, and the one that
        answers a health check may hold none (its peers took every connection), which
        would time a kill that stopped nothing."""
        assert self._store is not None
        if self.workers == 1:
            await asyncio.to_thread(self._store.server.kill_worker)
            return
        await asyncio.to_thread(self._kill_every_worker)

    def _kill_every_worker(self, timeout_s: float = 60.0) -> None:
        assert self._store is not None and self._store.server.pid is not None
        supervisor = self._store.server.pid
        killed = set(leaf_processes(supervisor))
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # every worker replaced, and one serving
            workers = set(leaf_processes(supervisor))
            replaced = len(workers) >= self.workers and not workers & killed
            if replaced and self._store.server.worker_pid(timeout=timeout_s) not in killed:
                return
            time.sleep(0.01)
        raise TimeoutError(f"the store's workers were not replaced in {timeout_s:g} s")

    async def counts(self, trip_ids: list[str] | None = None) -> TravelCounts:
        """What the travel services recorded in the store's database."""
        assert self._engine is not None
        return await read_travel_counts(self._engine, trip_ids)

    async def stop(self) -> None:
        """Stop the server and its cluster."""
        if self._http is not None:
            await self._http.close()
        if self._engine is not None:
            await self._engine.dispose()
        if self._store is not None:
            await asyncio.to_thread(self._store.__exit__, None, None, None)
            self._store = None
