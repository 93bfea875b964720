"""Travellers for the trip benchmark: what each system under test must offer, and the loads.

A system books trips (`book` waits for the outcome and, across a worker kill, keeps asking
until it has one), names the processes that do its work (for CPU), kills its worker, and
reads the travel services' own counts. The loads are the same for every system: trips one
at a time, trips from N travellers at once, and trips in flight through a kill -9.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.load import percentile
from bench.metrics import cpu_seconds, process_tree
from widget_store.simulated.travel import TravelCounts

BOOKED = "BOOKED"
ROLLED_BACK = "ROLLED_BACK"


@dataclass(frozen=True)
class TripOrder:
    """One trip to book: the body of the store's `POST /trips/{key}`, plus its key."""

    key: str
    user_id: str
    car_id: str
    hotel_id: str
    flight_id: str
    attempts: int

    def body(self) -> dict[str, Any]:
        """The JSON body of `POST /trips/{key}`."""
        return {
            "user_id": self.user_id,
            "car_id": self.car_id,
            "hotel_id": self.hotel_id,
            "flight_id": self.flight_id,
            "attempts": self.attempts,
        }


def trip_order(prefix: str, **items: Any) -> TripOrder:
    """A valid trip (the hotel fails once, then books on its second try), or one with the
    given items or attempts changed."""
    fields: dict[str, Any] = {
        "user_id": "traveller-1",
        "car_id": "compact-car",
        "hotel_id": "harbour-hotel",
        "flight_id": "LH-400",
        "attempts": 3,
    }
    fields.update(items)
    return TripOrder(key=f"{prefix}-{uuid.uuid4().hex}", **fields)


@dataclass(frozen=True)
class TripOutcome:
    """A system's answer: the reply of `POST /trips/{key}`."""

    trip_id: str
    status: str
    bookings: dict[str, str]
    cancelled: list[str]


class TripSystem(Protocol):
    """What the harness needs of the store and of Temporal alike."""

    name: str

    async def start(self) -> None:
        """Start everything; raise NotImplementedError if this system cannot run yet."""
        ...

    async def stop(self) -> None:
        """Stop everything `start` started."""
        ...

    async def book(self, order: TripOrder) -> TripOutcome:
        """Book the trip and wait for its outcome, asking again under the same key through
        a worker's crash and restart."""
        ...

    def pids(self) -> list[int]:
        """The processes that run the saga (their CPU is the system's cost)."""
        ...

    def database_pids(self) -> list[int]:
        """The PostgreSQL processes behind the system (reported apart)."""
        ...

    async def kill_worker(self) -> None:
        """kill -9 the process running the sagas, and return once a new one serves."""
        ...

    async def counts(self, trip_ids: list[str] | None = None) -> TravelCounts:
        """The travel services' own account of the trips."""
        ...


def postgres_pids(data_folder: Path) -> list[int]:
    """The postmaster of the cluster in `data_folder` and all its backends."""
    try:
        postmaster = int((data_folder / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return []
    return process_tree(postmaster)


@dataclass
class Ledger:
    """Every outcome a system gave during the run, by trip ID, for the consistency check."""

    statuses: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def record(self, outcome: TripOutcome) -> None:
        """Keep the outcome a system gave for a trip (the last one, if asked again)."""
        self.statuses[outcome.trip_id] = outcome.status


@dataclass
class LoadResult:
    """One turn of one load on one system."""

    concurrency: int
    trips: int = 0
    errors: int = 0
    unexpected: int = 0  # answered, but not BOOKED
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0
    database_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def trips_per_s(self) -> float:
        """Trips completed per second of the turn."""
        return self.trips / self.seconds if self.seconds else 0.0

    def per_trip_ms(self, seconds: float) -> float | None:
        """`seconds` (of CPU, say) per completed trip, in ms."""
        return seconds * 1000 / self.trips if self.trips else None

    def summary(self) -> dict[str, Any]:
        """The figures of this turn (what the report takes medians of)."""
        return {
            "concurrency": self.concurrency,
            "trips": self.trips,
            "errors": self.errors,
            "unexpected": self.unexpected,
            "trips_per_s": self.trips_per_s,
            "p50_ms": percentile(self.latencies_ms, 0.5),
            "p99_ms": percentile(self.latencies_ms, 0.99),
            "cpu_ms_per_trip": self.per_trip_ms(self.cpu_s),
            "database_cpu_ms_per_trip": self.per_trip_ms(self.database_cpu_s),
            "client_cpu_ms_per_trip": self.per_trip_ms(self.client_cpu_s),
        }


async def _timed_book(
    system: TripSystem, order: TripOrder, ledger: Ledger
) -> tuple[TripOutcome | None, float]:
    started = time.perf_counter()
    try:
        outcome = await system.book(order)
    except Exception as error:  # a failed trip is a figure of the benchmark, not its end
        ledger.errors.append(f"{system.name} {order.key}: {type(error).__name__}: {error}")
        return None, time.perf_counter() - started
    ledger.record(outcome)
    return outcome, time.perf_counter() - started


async def closed_loop(
    system: TripSystem, concurrency: int, seconds: float, ledger: Ledger
) -> LoadResult:
    """`concurrency` travellers, each booking one valid trip after another for `seconds`;
    trips already started when time is up are waited for and counted."""
    result = LoadResult(concurrency)
    stop_at = time.monotonic() + seconds

    async def traveller() -> None:
        while time.monotonic() < stop_at:
            outcome, took = await _timed_book(system, trip_order(f"{system.name}-load"), ledger)
            if outcome is None:
                result.errors += 1
                continue
            result.trips += 1
            result.latencies_ms.append(took * 1000)
            if outcome.status != BOOKED:
                result.unexpected += 1

    pids, database = system.pids(), system.database_pids()
    cpu, db_cpu, client_cpu = cpu_seconds(pids), cpu_seconds(database), time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(traveller() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    result.cpu_s = cpu_seconds(pids) - cpu
    result.database_cpu_s = cpu_seconds(database) - db_cpu
    result.client_cpu_s = time.process_time() - client_cpu
    return result


@dataclass
class KillResult:
    """Trips in flight through a kill -9 of the worker, timed from the kill."""

    trips: int
    in_flight: int = 0
    restarted_s: float | None = None  # until a new worker served
    finished_s: float | None = None  # until the last trip in flight had its outcome
    errors: int = 0
    unexpected: int = 0

    @property
    def after_restart_s(self) -> float | None:
        """From the new worker serving until the last trip in flight was done."""
        if self.finished_s is None or self.restarted_s is None:
            return None
        return max(0.0, self.finished_s - self.restarted_s)

    def summary(self) -> dict[str, Any]:
        """The figures of this turn."""
        return {
            "trips": self.trips,
            "in_flight": self.in_flight,
            "restarted_s": self.restarted_s,
            "finished_s": self.finished_s,
            "after_restart_s": self.after_restart_s,
            "errors": self.errors,
            "unexpected": self.unexpected,
        }


async def _until(check: Callable[[], Any], timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(poll_s)
    return False


async def through_a_kill(
    system: TripSystem, trips: int, ledger: Ledger, timeout_s: float = 120.0
) -> KillResult:
    """Start `trips` trips at once; once the services have seen half of them, kill -9 the
    worker; time until every trip unfinished at that moment has its outcome."""
    result = KillResult(trips)
    orders = [trip_order(f"{system.name}-kill") for _ in range(trips)]
    finished_at: dict[str, float] = {}

    async def one(order: TripOrder) -> None:
        outcome, _ = await _timed_book(system, order, ledger)
        finished_at[order.key] = time.monotonic()
        if outcome is None:
            result.errors += 1
        elif outcome.status != BOOKED:
            result.unexpected += 1

    # A system's trip IDs need not be its keys: count the trips the services know instead.
    known_before = len((await system.counts()).trips)
    tasks = [asyncio.create_task(one(order)) for order in orders]

    async def half_seen() -> bool:
        known = len((await system.counts()).trips) - known_before
        return known >= trips // 2 or all(task.done() for task in tasks)

    await _until(half_seen, timeout_s, poll_s=0.02)
    unfinished = [order.key for order in orders if order.key not in finished_at]
    result.in_flight = len(unfinished)
    killed = time.monotonic()
    await system.kill_worker()
    result.restarted_s = time.monotonic() - killed
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    if not pending and unfinished:
        result.finished_s = max(finished_at[key] for key in unfinished) - killed
    return result
