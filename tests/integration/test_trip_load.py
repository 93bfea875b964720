"""The trip benchmark's loads and its kill timing, on a fake system that runs the saga in
this process against the real travel services (SQLite)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.trip_load import (
    BOOKED,
    ROLLED_BACK,
    Ledger,
    TripOrder,
    TripOutcome,
    closed_loop,
    through_a_kill,
)
from widget_store.config import Database
from widget_store.simulated.travel import (
    TRIP_LEGS,
    TravelCounts,
    TravelServiceUnavailable,
    create_travel_tables,
    read_travel_counts,
    travel_services,
)


class FakeTrips:
    """The saga in this process, on the real services; its 'worker' is a gate that a kill
    closes for a moment, holding every trip at its next step."""

    name = "fake"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.services = travel_services(engine)
        self.alive = asyncio.Event()
        self.alive.set()
        self.kills = 0

    async def start(self) -> None:
        await create_travel_tables(self.engine)

    async def stop(self) -> None:
        await self.engine.dispose()

    async def book(self, order: TripOrder) -> TripOutcome:
        items = {"car": order.car_id, "hotel": order.hotel_id, "flight": order.flight_id}
        bookings: dict[str, str] = {}
        for leg in TRIP_LEGS:
            for attempt in range(1, order.attempts + 1):
                await self.alive.wait()
                try:
                    bookings[leg] = await self.services[leg].book(
                        f"{order.key}:{leg}", items[leg], order.key
                    )
                    break
                except TravelServiceUnavailable:
                    if attempt == order.attempts:
                        return await self._roll_back(order, bookings, leg)
        return TripOutcome(order.key, BOOKED, bookings, [])

    async def _roll_back(
        self, order: TripOrder, bookings: dict[str, str], failed: str
    ) -> TripOutcome:
        legs = TRIP_LEGS[: TRIP_LEGS.index(failed) + 1]  # type: ignore[arg-type]
        for leg in reversed(legs):
            await self.services[leg].cancel(f"{order.key}:{leg}")
        return TripOutcome(
            order.key, ROLLED_BACK, bookings, [f"cancel_{leg}" for leg in reversed(legs)]
        )

    def pids(self) -> list[int]:
        return [os.getpid()]

    def database_pids(self) -> list[int]:
        return []

    async def kill_worker(self) -> None:
        self.kills += 1
        self.alive.clear()
        await asyncio.sleep(0.2)  # the restart
        self.alive.set()

    async def counts(self, trip_ids: list[str] | None = None) -> TravelCounts:
        return await read_travel_counts(self.engine, trip_ids)


def with_fake(tmp_path: Path, scenario: Callable[[FakeTrips], Awaitable[None]]) -> None:
    async def main() -> None:
        url = Database.parse(f"sqlite:///{tmp_path / 'travel.sqlite'}").async_url
        fake = FakeTrips(create_async_engine(url))
        await fake.start()
        try:
            await scenario(fake)
        finally:
            await fake.stop()

    asyncio.run(main())


class QuickTrips(FakeTrips):
    """Trips that book at once: the loop's counting, on a machine however busy (a real
    trip on SQLite took 370 ms under CI's load, longer than the loop's 0.3 s)."""

    async def book(self, order: TripOrder) -> TripOutcome:
        await asyncio.sleep(0.001)
        return TripOutcome(order.key, BOOKED, {"car": "C", "hotel": "H", "flight": "F"}, [])


def test_a_closed_loop_counts_every_trip_and_its_latency(tmp_path: Path) -> None:
    async def scenario(fake: FakeTrips) -> None:
        ledger = Ledger()
        quick = QuickTrips(fake.engine)
        load = await closed_loop(quick, 4, 0.3, ledger)

        assert load.trips > 4
        assert len(load.latencies_ms) == load.trips == len(ledger.statuses)
        assert load.errors == load.unexpected == 0
        summary = load.summary()
        assert summary["trips_per_s"] > 0
        assert summary["p50_ms"] <= summary["p99_ms"]
        assert summary["cpu_ms_per_trip"] is not None

    with_fake(tmp_path, scenario)


def test_trips_in_flight_through_a_kill_are_timed_from_the_kill(tmp_path: Path) -> None:
    async def scenario(fake: FakeTrips) -> None:
        ledger = Ledger()
        kill = await through_a_kill(fake, 8, ledger)

        assert fake.kills == 1
        assert kill.in_flight > 0
        assert kill.restarted_s is not None and kill.restarted_s >= 0.2
        assert kill.finished_s is not None and kill.finished_s >= kill.restarted_s
        assert kill.errors == kill.unexpected == 0
        counts = await fake.counts()
        assert len(counts.trips) == 8
        assert all(trip.fully_booked for trip in counts.trips.values())

    with_fake(tmp_path, scenario)
