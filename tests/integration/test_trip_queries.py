"""The trip steps' writes, on both backends: each goes in once, with its log entries and
their outbox events, and a second run (a step that committed and crashed before its
checkpoint) changes nothing. On PostgreSQL each is one statement, outside a transaction
as the steps run it (`durability.write_alone`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from widget_store.config import Database
from widget_store.domain import TripEvent, TripRequest, TripStatus
from widget_store.queries import trips as queries
from widget_store.schema import outbox

T = TypeVar("T")
REQUEST = TripRequest("u1", "car-1", "hotel-1", "flight-1", attempts=3)


def run_on(database_url: str, scenario: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def main() -> T:
        database = Database.parse(database_url)
        options: dict[str, Any] = {} if database.is_sqlite else {"isolation_level": "AUTOCOMMIT"}
        engine = create_async_engine(database.async_url, **options)
        try:
            return await scenario(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def each_alone(engine: AsyncEngine, write: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `write` as a step does: autocommit on PostgreSQL, a transaction on SQLite."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            return await write(conn)
    async with engine.begin() as conn:
        return await write(conn)


async def create(engine: AsyncEngine, key: str = "trip-1") -> tuple[Any, bool]:
    return await each_alone(
        engine,
        lambda db: queries.create_trip_and_log(
            db, trip_key=key, request=REQUEST, access_token="token"
        ),
    )


async def record(engine: AsyncEngine, trip_id: int, leg: str, *, ends: bool = False) -> bool:
    return await each_alone(
        engine,
        lambda db: queries.record_leg_and_log(
            db, trip_id, leg, f"{leg.upper()}-1", f"{leg.upper()}-1", ends=ends
        ),
    )


async def state(engine: AsyncEngine, trip_id: int) -> tuple[Any, list[str], list[tuple[int, str]]]:
    async with engine.connect() as conn:
        trip = await queries.trip_by_id(conn, trip_id)
        history = [entry["type"] for entry in await queries.trip_history(conn, trip_id)]
        published = await conn.execute(
            sa.select(outbox.c.seq, outbox.c.type)
            .where(outbox.c.aggregate == "trip", outbox.c.aggregate_id == trip_id)
            .order_by(outbox.c.seq)
        )
        return trip, history, [tuple(row) for row in published]  # type: ignore[misc]


def test_a_trip_is_created_and_logged_once_per_key(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> Any:
        (first, created), (second, again) = await create(engine), await create(engine)
        assert (created, again) == (True, False)
        assert second.trip_id == first.trip_id and second.access_token == "token"
        assert first.status == TripStatus.PENDING and first.car_id == "car-1"
        return await state(engine, first.trip_id)

    _trip, history, published = run_on(database_url, scenario)
    assert history == [TripEvent.REQUESTED]
    assert published == [(1, TripEvent.REQUESTED.value)]


def test_a_legs_confirmation_is_recorded_and_logged_once(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> Any:
        trip, _ = await create(engine)
        assert await record(engine, trip.trip_id, "car")
        assert not await record(engine, trip.trip_id, "car"), "a second run writes nothing"
        return await state(engine, trip.trip_id)

    trip, history, published = run_on(database_url, scenario)
    assert trip.car_confirmation == "CAR-1" and trip.status == TripStatus.PENDING
    assert history == [TripEvent.REQUESTED, TripEvent.CAR_BOOKED]
    assert [seq for seq, _ in published] == [1, 2]


def test_the_last_legs_confirmation_books_the_trip_in_the_same_write(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> Any:
        trip, _ = await create(engine)
        for leg in ("car", "hotel"):
            await record(engine, trip.trip_id, leg)
        assert await record(engine, trip.trip_id, "flight", ends=True)
        assert not await record(engine, trip.trip_id, "flight", ends=True)
        return await state(engine, trip.trip_id)

    trip, history, published = run_on(database_url, scenario)
    assert trip.status == TripStatus.BOOKED and trip.flight_confirmation == "FLIGHT-1"
    assert history[-2:] == [TripEvent.FLIGHT_BOOKED, TripEvent.BOOKED]
    assert published == list(enumerate(history, start=1))


def test_a_trip_that_already_ended_is_not_booked_by_a_late_last_leg(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> Any:
        trip, _ = await create(engine)
        await each_alone(
            engine,
            lambda db: queries.end_trip(db, trip.trip_id, TripStatus.ROLLED_BACK, "gave up"),
        )
        assert not await record(engine, trip.trip_id, "flight", ends=True)
        return await state(engine, trip.trip_id)

    trip, history, _published = run_on(database_url, scenario)
    assert trip.status == TripStatus.ROLLED_BACK and trip.flight_confirmation is None
    assert history == [TripEvent.REQUESTED]


def test_a_booking_reads_its_trip_and_the_types_of_its_log_in_order(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> Any:
        trip, _ = await create(engine)
        await record(engine, trip.trip_id, "car")
        await record(engine, trip.trip_id, "hotel")
        await create(engine, key="another-trip")  # its log is not this trip's
        async with engine.connect() as conn:
            found = await queries.trip_and_event_types_by_key(conn, "trip-1")
            missing = await queries.trip_and_event_types_by_key(conn, "no-such-trip")
        return trip, found, missing

    trip, found, missing = run_on(database_url, scenario)
    assert missing is None
    row, types = found
    assert row.trip_id == trip.trip_id and row.hotel_confirmation == "HOTEL-1"
    assert types == [TripEvent.REQUESTED, TripEvent.CAR_BOOKED, TripEvent.HOTEL_BOOKED]
