"""The simulated travel services: idempotent by booking key, the hotel down on each key's first
try, invalid items refused, and every call that reached a service counted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import PostgresDatabase
from widget_store.config import Database
from widget_store.simulated.travel import (
    TravelBookingRejected,
    TravelServiceUnavailable,
    create_travel_tables,
    read_travel_counts,
    travel_bookings,
    travel_metadata,
    travel_services,
)

Scenario = Callable[[AsyncEngine], Awaitable[None]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def travel_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An async URL whose database holds an empty `travel_bookings`, on each backend."""
    if request.param == "sqlite":
        return Database.parse(f"sqlite:///{tmp_path / 'travel.sqlite'}").async_url
    postgres: PostgresDatabase = request.getfixturevalue("postgres")
    engine = sa.create_engine(Database.parse(postgres.url).sync_url, poolclass=sa.pool.NullPool)
    travel_metadata.drop_all(engine)  # what an earlier test left
    engine.dispose()
    return Database.parse(postgres.url).async_url


def run(url: str, scenario: Scenario) -> None:
    """Run `scenario` on a fresh engine in its own event loop, as each test needs."""

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            await create_travel_tables(engine)
            await scenario(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_booking_returns_a_confirmation_and_leaves_one_live_booking(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        car = travel_services(engine)["car"]
        confirmation = await car.book("trip-1:car", "compact-car", "trip-1")

        assert confirmation.startswith("CAR-")
        trip = (await read_travel_counts(engine)).trips["trip-1"]
        assert trip.confirmations == {"car": 1}
        assert trip.live == {"car": 1}
        assert (trip.book_calls, trip.repeated_calls, trip.duplicates) == (1, 0, 0)

    run(travel_url, scenario)


def test_booking_the_same_key_again_returns_the_same_confirmation_and_books_nothing_new(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        flight = travel_services(engine)["flight"]
        first = await flight.book("trip-1:flight", "LH-400", "trip-1")
        again = await flight.book("trip-1:flight", "LH-400", "trip-1")

        assert again == first
        counts = await read_travel_counts(engine)
        assert counts.bookings == 1
        assert counts.duplicates == 0
        assert (counts.book_calls, counts.repeated_calls) == (2, 1)

    run(travel_url, scenario)


def test_the_hotel_is_down_on_the_first_try_for_each_key_and_books_on_the_next(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        hotel = travel_services(engine)["hotel"]
        with pytest.raises(TravelServiceUnavailable):
            await hotel.book("trip-1:hotel", "seaside-room", "trip-1")
        confirmation = await hotel.book("trip-1:hotel", "seaside-room", "trip-1")
        with pytest.raises(TravelServiceUnavailable):
            await hotel.book("trip-2:hotel", "seaside-room", "trip-2")

        assert confirmation.startswith("HTL-")
        counts = await read_travel_counts(engine)
        assert counts.trips["trip-1"].live == {"hotel": 1}
        assert counts.trips["trip-2"].confirmations == {}
        # The retry is the call the behaviour asks for, not a repeated one.
        assert (counts.book_calls, counts.repeated_calls) == (3, 0)

    run(travel_url, scenario)


def test_an_invalid_item_is_refused_on_every_try_and_books_nothing(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        services = travel_services(engine)
        for _ in range(2):
            with pytest.raises(TravelBookingRejected):
                await services["car"].book("trip-1:car", "invalid-car", "trip-1")
        # The hotel is down first even for an invalid room, as in the tutorial.
        with pytest.raises(TravelServiceUnavailable):
            await services["hotel"].book("trip-1:hotel", "Invalid-Room", "trip-1")
        with pytest.raises(TravelBookingRejected):
            await services["hotel"].book("trip-1:hotel", "Invalid-Room", "trip-1")

        trip = (await read_travel_counts(engine)).trips["trip-1"]
        assert trip.confirmations == {}
        assert trip.nothing_live
        assert trip.book_calls == 4

    run(travel_url, scenario)


def test_cancelling_a_booking_releases_it_once(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        car = travel_services(engine)["car"]
        confirmation = await car.book("trip-1:car", "compact-car", "trip-1")

        assert await car.cancel("trip-1:car") is True
        assert await car.cancel("trip-1:car") is False
        # A key names one booking for good: booking it again does not revive it.
        assert await car.book("trip-1:car", "compact-car", "trip-1") == confirmation

        trip = (await read_travel_counts(engine)).trips["trip-1"]
        assert trip.nothing_live
        assert trip.confirmations == {"car": 1}
        assert (trip.cancel_calls, trip.repeated_calls) == (2, 2)

    run(travel_url, scenario)


def test_cancelling_what_was_never_booked_returns_false_and_is_counted(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        services = travel_services(engine)
        assert await services["flight"].cancel("never-seen") is False
        with pytest.raises(TravelBookingRejected):
            await services["flight"].book("trip-1:flight", "invalid-flight", "trip-1")
        assert await services["flight"].cancel("trip-1:flight") is False

        counts = await read_travel_counts(engine)
        assert counts.unknown_cancel_calls == 1
        assert counts.trips["trip-1"].cancel_calls == 1
        assert (counts.cancel_calls, counts.repeated_calls, counts.bookings) == (2, 0, 0)

    run(travel_url, scenario)


def test_a_cancel_that_came_first_leaves_the_key_bookable_and_the_trip_known(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        car = travel_services(engine)["car"]
        assert await car.cancel("trip-1:car") is False
        await car.book("trip-1:car", "compact-car", "trip-1")

        counts = await read_travel_counts(engine)
        assert counts.unknown_cancel_calls == 0
        assert counts.trips["trip-1"].live == {"car": 1}

    run(travel_url, scenario)


def test_the_hotel_is_still_down_on_the_first_book_of_a_key_a_cancel_reached_first(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        hotel = travel_services(engine)["hotel"]
        assert await hotel.cancel("trip-1:hotel") is False
        with pytest.raises(TravelServiceUnavailable):
            await hotel.book("trip-1:hotel", "seaside-room", "trip-1")
        confirmation = await hotel.book("trip-1:hotel", "seaside-room", "trip-1")

        assert confirmation.startswith("HTL-")
        counts = await read_travel_counts(engine)
        assert counts.trips["trip-1"].live == {"hotel": 1}
        assert (counts.book_calls, counts.repeated_calls) == (2, 0)

    run(travel_url, scenario)


def test_an_invalid_hotel_room_is_down_first_then_refused_and_never_booked(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        hotel = travel_services(engine)["hotel"]
        with pytest.raises(TravelServiceUnavailable):
            await hotel.book("trip-1:hotel", "invalid-room", "trip-1")
        for _ in range(2):
            with pytest.raises(TravelBookingRejected):
                await hotel.book("trip-1:hotel", "invalid-room", "trip-1")

        counts = await read_travel_counts(engine)
        assert counts.trips["trip-1"].confirmations == {}
        assert (counts.book_calls, counts.repeated_calls) == (3, 0)

    run(travel_url, scenario)


def test_the_same_leg_booked_under_a_second_key_is_a_duplicate_side_effect(
    travel_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        car = travel_services(engine)["car"]
        first = await car.book("trip-1:car", "compact-car", "trip-1")
        second = await car.book("trip-1:car:retry", "compact-car", "trip-1")

        assert first != second
        counts = await read_travel_counts(engine)
        assert counts.duplicates == 1
        assert counts.repeated_calls == 0
        assert not counts.trips["trip-1"].fully_booked

    run(travel_url, scenario)


def test_each_service_has_its_own_booking_keys(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        services = travel_services(engine)
        car = await services["car"].book("trip-1", "compact-car", "trip-1")
        flight = await services["flight"].book("trip-1", "LH-400", "trip-1")
        with pytest.raises(TravelServiceUnavailable):
            await services["hotel"].book("trip-1", "seaside-room", "trip-1")
        hotel = await services["hotel"].book("trip-1", "seaside-room", "trip-1")

        assert len({car, flight, hotel}) == 3
        trip = (await read_travel_counts(engine)).trips["trip-1"]
        assert trip.fully_booked
        assert trip.duplicates == 0

    run(travel_url, scenario)


def test_concurrent_calls_with_one_key_book_once(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        airline = travel_services(engine)["flight"]
        confirmations = await asyncio.gather(
            *(airline.book("trip-1:flight", "LH-400", "trip-1") for _ in range(8))
        )
        cancelled = await asyncio.gather(*(airline.cancel("trip-1:flight") for _ in range(8)))

        assert len(set(confirmations)) == 1
        assert sorted(cancelled) == [False] * 7 + [True]
        counts = await read_travel_counts(engine)
        assert (counts.bookings, counts.duplicates) == (1, 0)
        assert (counts.book_calls, counts.cancel_calls, counts.repeated_calls) == (8, 8, 14)

    run(travel_url, scenario)


def test_counts_can_be_read_for_chosen_trips_only(travel_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        car = travel_services(engine)["car"]
        for trip_id in ("trip-1", "trip-2", "trip-3"):
            await car.book(f"{trip_id}:car", "compact-car", trip_id)

        counts = await read_travel_counts(engine, ["trip-1", "trip-3"])

        assert sorted(counts.trips) == ["trip-1", "trip-3"]
        async with engine.connect() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(travel_bookings))
            assert total.scalar_one() == 3

    run(travel_url, scenario)
