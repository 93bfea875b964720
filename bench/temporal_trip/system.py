"""The benchmark's handle on the Temporal side: the dev server, one worker process, and the
travel services' database on a private PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.client import Client
from temporalio.service import RPCError

from bench.metrics import process_tree
from bench.temporal_trip.server import TIMER_SHIFT_MS, DevServer
from bench.temporal_trip.shared import TripInput, TripPolicy
from bench.temporal_trip.starter import book_trip
from bench.trip_load import TripOrder, TripOutcome, postgres_pids
from tests.chaos.cluster import PrivateCluster
from widget_store.config import PROJECT_ROOT, Database
from widget_store.simulated.travel import TravelCounts, create_travel_tables, read_travel_counts


@dataclass(frozen=True)
class TemporalOptions:
    """How Temporal is run; the defaults are the SDK's and the dev server's, but for the
    timer shift (see `server.TIMER_SHIFT_MS`) and the saga's own retry backoff."""

    policy: TripPolicy = field(default_factory=TripPolicy)
    sticky_timeout_s: float = 10.0
    in_memory: bool = False
    timer_shift_ms: float | None = TIMER_SHIFT_MS
    unsandboxed: bool = False

    def describe(self) -> str:
        """One line for the report."""
        p = self.policy
        shift = "server default" if self.timer_shift_ms is None else f"{self.timer_shift_ms:g} ms"
        return (
            f"dev server state {'in memory' if self.in_memory else 'in a SQLite file (WAL)'}, "
            f"timer shift {shift}, workflows {'un' if self.unsandboxed else ''}sandboxed, "
            f"retry backoff {p.retry_initial_s * 1000:g} ms doubling, activity timeout "
            f"{p.activity_timeout_s:g} s, workflow task timeout {p.task_timeout_s:g} s, "
            f"sticky timeout {self.sticky_timeout_s:g} s"
        )


class TemporalTrips:
    """The trip saga on Temporal, as the benchmark drives it (a `TripSystem`)."""

    name = "temporal"

    def __init__(self, options: TemporalOptions) -> None:
        self.options = options
        self.folder = Path(tempfile.mkdtemp(prefix="widget-store-bench-temporal-"))
        self._cluster: PrivateCluster | None = None
        self._engine: AsyncEngine | None = None
        self._server: DevServer | None = None
        self._client: Client | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_starts = 0

    async def start(self) -> None:
        """The services' database, the dev server, a client and a worker."""
        try:
            self._cluster = PrivateCluster(durable=True)
            await asyncio.to_thread(self._cluster.create)
            self._engine = create_async_engine(Database.parse(self._cluster.url).async_url)
            await create_travel_tables(self._engine)
            self._server = DevServer(
                self.folder,
                in_memory=self.options.in_memory,
                timer_shift_ms=self.options.timer_shift_ms,
            )
            self._server.start()
            self._client = await self._connect(self._server.address)
            await self._start_worker()
        except BaseException:
            await self.stop()
            raise

    @staticmethod
    async def _connect(address: str, timeout_s: float = 30.0) -> Client:
        # The frontend listens a moment before it answers.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = await Client.connect(address)
                if await client.service_client.check_health():
                    return client
            except (RuntimeError, RPCError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Temporal dev server at {address} never answered")
            await asyncio.sleep(0.1)

    async def _start_worker(self, timeout_s: float = 60.0) -> None:
        assert self._server is not None and self._cluster is not None
        self._worker_starts += 1
        ready = self.folder / f"worker-ready-{self._worker_starts}"
        command = [
            sys.executable,
            "-m",
            "bench.temporal_trip.worker",
            "--address",
            self._server.address,
            "--database-url",
            self._cluster.url,
            "--sticky-timeout-s",
            str(self.options.sticky_timeout_s),
            "--ready-file",
            str(ready),
        ]
        if self.options.unsandboxed:
            command.append("--unsandboxed")
        with (self.folder / "worker.log").open("ab") as log:
            self._worker = subprocess.Popen(
                command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self._worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Temporal worker did not start:\n{self.worker_log()}")
            await asyncio.sleep(0.02)

    def worker_log(self) -> str:
        """The end of the workers' log."""
        path = self.folder / "worker.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def book(self, order: TripOrder) -> TripOutcome:
        """Start the trip's workflow (or join it) and wait for its result; the server keeps
        it through a worker's crash, so nothing has to be asked again."""
        assert self._client is not None
        trip = TripInput(
            user_id=order.user_id,
            car_id=order.car_id,
            hotel_id=order.hotel_id,
            flight_id=order.flight_id,
            attempts=order.attempts,
            policy=self.options.policy,
        )
        result = await book_trip(self._client, order.key, trip)
        return TripOutcome(result.trip_id, result.status, result.bookings, result.cancelled)

    def pids(self) -> list[int]:
        """The dev server and the worker."""
        assert self._server is not None and self._worker is not None
        return [self._server.pid, *process_tree(self._worker.pid)]

    def database_pids(self) -> list[int]:
        """The travel services' PostgreSQL."""
        return postgres_pids(self._cluster.data) if self._cluster else []

    async def kill_worker(self) -> None:
        """kill -9 the worker and start another, as a supervisor would."""
        assert self._worker is not None
        os.kill(self._worker.pid, signal.SIGKILL)
        await asyncio.to_thread(self._worker.wait)
        await self._start_worker()

    async def counts(self, trip_ids: list[str] | None = None) -> TravelCounts:
        """What the travel services recorded."""
        assert self._engine is not None
        return await read_travel_counts(self._engine, trip_ids)

    async def stop(self) -> None:
        """Stop the worker (gracefully), the server and the cluster; remove their files."""
        if self._worker is not None and self._worker.poll() is None:
            self._worker.terminate()
            try:
                await asyncio.to_thread(self._worker.wait, 15)
            except subprocess.TimeoutExpired:
                self._worker.kill()
                await asyncio.to_thread(self._worker.wait)
        if self._server is not None:
            self._server.stop()
        if self._engine is not None:
            await self._engine.dispose()
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.destroy)
        shutil.rmtree(self.folder, ignore_errors=True)
