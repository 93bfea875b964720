"""The trip saga's writes and reads: the trip row, its history, its parked compensations.

Like the order's, every write is an insert keyed by something unique or a conditional
UPDATE on a state column, so a step that committed and crashed before its checkpoint
runs again and changes nothing; the WHERE clause of each says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from widget_store.domain import TripEvent, TripRequest, TripStatus
from widget_store.events import Aggregate
from widget_store.queries._base import Db, changed_one_row, utcnow
from widget_store.queries.orders import _insert_ignoring_duplicates
from widget_store.queries.outbox import (
    add_aggregate_events,
    is_postgres,
    log_and_publish_many,
    log_many_ctes,
    log_many_parameters,
)
from widget_store.schema import dead_letters, trip_events, trips

# Log entries that may legitimately repeat in one trip's history.
REPEATABLE_TRIP_EVENTS = frozenset({TripEvent.COMPENSATION_PARKED, TripEvent.COMPENSATION_RETRIED})
BOOKED_EVENTS = {
    "car": TripEvent.CAR_BOOKED,
    "hotel": TripEvent.HOTEL_BOOKED,
    "flight": TripEvent.FLIGHT_BOOKED,
}
CONFIRMATION_COLUMNS = {
    "car": trips.c.car_confirmation,
    "hotel": trips.c.hotel_confirmation,
    "flight": trips.c.flight_confirmation,
}


async def insert_trip(
    db: Db, *, trip_key: str, request: TripRequest, access_token: str
) -> tuple[Any, bool]:
    """A PENDING trip, once per key (a unique column); returns its row and whether this
    call created it. A second run finds the first run's trip, token and all."""
    now = utcnow()
    result = await db.execute(
        _insert_ignoring_duplicates(db, trips)
        .values(
            trip_key=trip_key,
            fingerprint=request.fingerprint(),
            user_id=request.user_id,
            car_id=request.car_id,
            hotel_id=request.hotel_id,
            flight_id=request.flight_id,
            attempts=request.attempts,
            status=TripStatus.PENDING.value,
            access_token=access_token,
            created_at=now,
            updated_at=now,
        )
        .returning(*trips.c)
    )
    made = result.first()
    if made is not None:
        return made, True
    return await trip_by_key(db, trip_key), False


# On PostgreSQL a new trip and its first log entry go in as one statement: the insert
# (once per key), then the entry only if it went in, for the trip it made.
CREATE_TRIP_AND_LOG = sa.text(
    """
    WITH made AS (
        INSERT INTO trips (trip_key, fingerprint, user_id, car_id, hotel_id, flight_id,
            attempts, status, access_token, created_at, updated_at)
        VALUES (:trip_key, :fingerprint, :user_id, :car_id, :hotel_id, :flight_id,
            :attempts, :status, :access_token, CAST(:at AS TIMESTAMP WITH TIME ZONE),
            CAST(:at AS TIMESTAMP WITH TIME ZONE))
        ON CONFLICT (trip_key) DO NOTHING
        RETURNING *
    ),"""
    + log_many_ctes(
        Aggregate.TRIP, "WHERE EXISTS (SELECT 1 FROM made)", "(SELECT trip_id FROM made)"
    )
    + "SELECT * FROM made"
)


async def create_trip_and_log(
    db: Db, *, trip_key: str, request: TripRequest, access_token: str
) -> tuple[Any, bool]:
    """`insert_trip`, and if this call created it, the trip's REQUESTED entry: one
    statement on PostgreSQL. A second run finds the first run's trip and logs nothing."""
    if not is_postgres(db):
        trip, created = await insert_trip(
            db, trip_key=trip_key, request=request, access_token=access_token
        )
        if created:
            await append_trip_event(db, trip.trip_id, TripEvent.REQUESTED)
        return trip, created
    now = utcnow()
    requested = TripEvent.REQUESTED.value
    result = await db.execute(
        CREATE_TRIP_AND_LOG,
        {
            # Owner 0: unused, the statement logs for the trip it made.
            **log_many_parameters(0, [(requested, "", requested)], now, Aggregate.TRIP),
            "trip_key": trip_key,
            "fingerprint": request.fingerprint(),
            "user_id": request.user_id,
            "car_id": request.car_id,
            "hotel_id": request.hotel_id,
            "flight_id": request.flight_id,
            "attempts": request.attempts,
            "status": TripStatus.PENDING.value,
            "access_token": access_token,
        },
    )
    made = result.first()
    if made is not None:
        return made, True
    return await trip_by_key(db, trip_key), False


# The reads every trip makes, built once (a statement built anew costs SQLAlchemy more
# CPU than running one built before; see `widget_store.simulated.travel`).
_TRIP_BY_KEY = sa.select(trips).where(trips.c.trip_key == sa.bindparam("key"))
_TRIP_BY_ID = sa.select(trips).where(trips.c.trip_id == sa.bindparam("id"))
_TRIP_HISTORY = (
    sa.select(trip_events.c.type, trip_events.c.detail, trip_events.c.at)
    .where(trip_events.c.trip_id == sa.bindparam("id"))
    .order_by(trip_events.c.event_id)
)


# The trip and the types of its log entries, in order, as one statement (PostgreSQL):
# what a booking's reply is made of.
_TRIP_AND_EVENT_TYPES_BY_KEY = sa.select(
    trips,
    sa.select(
        sa.func.coalesce(
            sa.func.json_agg(aggregate_order_by(trip_events.c.type, trip_events.c.event_id)),
            sa.literal_column("'[]'::json"),
        )
    )
    .where(trip_events.c.trip_id == trips.c.trip_id)
    .scalar_subquery()
    .label("event_types"),
).where(trips.c.trip_key == sa.bindparam("key"))


async def trip_and_event_types_by_key(db: Db, trip_key: str) -> tuple[Any, list[str]] | None:
    """The trip with this key and the types of its log entries, oldest first (None if
    there is no such trip): one snapshot, in one statement on PostgreSQL."""
    if is_postgres(db):
        row = (await db.execute(_TRIP_AND_EVENT_TYPES_BY_KEY, {"key": trip_key})).first()
        return None if row is None else (row, list(row.event_types))
    trip = await trip_by_key(db, trip_key)
    if trip is None:
        return None
    return trip, [entry["type"] for entry in await trip_history(db, trip.trip_id)]


async def trip_by_key(db: Db, trip_key: str) -> Any:
    return (await db.execute(_TRIP_BY_KEY, {"key": trip_key})).first()


async def trip_by_id(db: Db, trip_id: int) -> Any:
    return (await db.execute(_TRIP_BY_ID, {"id": trip_id})).first()


async def record_confirmation(db: Db, trip_id: int, leg: str, confirmation: str) -> bool:
    """The service's confirmation for one leg; once (only while none is recorded)."""
    column = CONFIRMATION_COLUMNS[leg]
    return await changed_one_row(
        db,
        sa.update(trips)
        .where(trips.c.trip_id == trip_id, column.is_(None))
        .values({column: confirmation, trips.c.updated_at: utcnow()}),
    )


# On PostgreSQL a leg's confirmation, the trip's end when it is the last leg, and their
# log entries go in as one statement: the conditional UPDATE, then the entries only if
# it matched (`moved`). What record_confirmation, end_trip and append_trip_events do, in
# their order, for one round trip (outside a transaction, `durability.write_alone`)
# instead of five.
_RECORD_LEG_AND_LOG = """
    WITH moved AS (
        UPDATE trips
        SET {column} = CAST(:confirmation AS VARCHAR),
            status = CASE WHEN CAST(:ends AS BOOLEAN) THEN CAST(:booked AS VARCHAR)
                          ELSE status END,
            updated_at = CAST(:at AS TIMESTAMP WITH TIME ZONE)
        WHERE trip_id = CAST(:owner_id AS BIGINT) AND {column} IS NULL
            AND (NOT CAST(:ends AS BOOLEAN) OR status = CAST(:pending AS VARCHAR))
        RETURNING trip_id
    ),"""
RECORD_LEG_AND_LOG = {
    leg: sa.text(
        _RECORD_LEG_AND_LOG.format(column=column.name)
        + log_many_ctes(Aggregate.TRIP, "WHERE EXISTS (SELECT 1 FROM moved)")
        + "SELECT trip_id FROM moved"
    )
    for leg, column in CONFIRMATION_COLUMNS.items()
}


async def record_leg_and_log(
    db: Db, trip_id: int, leg: str, confirmation: str, detail: str, *, ends: bool
) -> bool:
    """The service's confirmation for one leg, once (only while none is recorded), logged
    with `detail`; with `ends`, the last leg's, the trip turns BOOKED with it (only a
    PENDING trip records it then). True if this call recorded it: a second run finds the
    confirmation there and writes nothing. One statement on PostgreSQL."""
    booked = BOOKED_EVENTS[leg]
    log = [(booked, detail), *([(TripEvent.BOOKED, "")] if ends else [])]
    if not is_postgres(db):
        pending = not ends or (await trip_by_id(db, trip_id)).status == TripStatus.PENDING
        if not (pending and await record_confirmation(db, trip_id, leg, confirmation)):
            return False
        if ends:
            await end_trip(db, trip_id, TripStatus.BOOKED)
        await append_trip_events(db, trip_id, log)
        return True
    parameters = log_many_parameters(
        trip_id,
        [(event.value, text, event.value) for event, text in log],
        utcnow(),
        Aggregate.TRIP,
    )
    result = await db.execute(
        RECORD_LEG_AND_LOG[leg],
        {
            **parameters,
            "confirmation": confirmation,
            "ends": ends,
            "booked": TripStatus.BOOKED.value,
            "pending": TripStatus.PENDING.value,
        },
    )
    return result.first() is not None


async def end_trip(db: Db, trip_id: int, status: TripStatus, reason: str | None = None) -> bool:
    """PENDING -> BOOKED or ROLLED_BACK; once (only a trip still PENDING matches)."""
    return await changed_one_row(
        db,
        sa.update(trips)
        .where(trips.c.trip_id == trip_id, trips.c.status == TripStatus.PENDING.value)
        .values(status=status.value, reason=reason, updated_at=utcnow()),
    )


async def append_trip_event(db: Db, trip_id: int, event: TripEvent, detail: str = "") -> bool:
    """Log a change to the trip in the transaction that makes it; once per trip, and to the
    outbox beside it (as `widget_store.trips.<type>`). True if the entry was added."""
    return bool(await append_trip_events(db, trip_id, [(event, detail)]))


async def append_trip_events(
    db: Db, trip_id: int, entries: Sequence[tuple[TripEvent, str]]
) -> list[str]:
    """Log several changes made by one transaction, in order, each once per trip (as
    `append_trip_event`), with their outbox events: one statement on PostgreSQL, three
    on SQLite, however many; returns the types added."""
    now = utcnow()
    if is_postgres(db):
        return await log_and_publish_many(
            db,
            owner_id=trip_id,
            entries=[
                (event.value, detail, None if event in REPEATABLE_TRIP_EVENTS else event.value)
                for event, detail in entries
            ],
            at=now,
            aggregate=Aggregate.TRIP,
        )
    rows = [
        {
            "trip_id": trip_id,
            "type": event.value,
            "detail": detail,
            "at": now,
            "once_key": None if event in REPEATABLE_TRIP_EVENTS else event.value,
        }
        for event, detail in entries
    ]
    result = await db.execute(
        _insert_ignoring_duplicates(db, trip_events)
        .values(rows)
        .returning(trip_events.c.event_id, trip_events.c.type)
    )
    # RETURNING's order is not promised for a multi-row insert: the IDs give it back.
    added = [row.type for row in sorted(result, key=lambda row: row.event_id)]
    await add_aggregate_events(
        db, aggregate=Aggregate.TRIP, aggregate_id=trip_id, types=added, payload={}, at=now
    )
    return added


async def trip_history(db: Db, trip_id: int) -> list[dict[str, Any]]:
    """The trip's log, oldest first."""
    rows = await db.execute(_TRIP_HISTORY, {"id": trip_id})
    return [dict(row._mapping) for row in rows]


async def trip_details(db: Db, trip_id: int) -> dict[str, Any] | None:
    """The trip row and its history (the history read first, so the row is never older)."""
    events = await trip_history(db, trip_id)
    row = await trip_by_id(db, trip_id)
    if row is None:
        return None
    return {**dict(row._mapping), "events": events}


async def recent_trips(
    db: Db, *, status: TripStatus | None, limit: int, before: int | None
) -> list[Any]:
    """Recent trips, newest first, optionally in one status; keyset-paged on the trip ID."""
    query = sa.select(trips).order_by(trips.c.trip_id.desc()).limit(limit)
    if status is not None:
        query = query.where(trips.c.status == status.value)
    if before is not None:
        query = query.where(trips.c.trip_id < before)
    return list(await db.execute(query))


async def trip_counts(db: Db) -> dict[str, int]:
    """Trips by status."""
    rows = await db.execute(sa.select(trips.c.status, sa.func.count()).group_by(trips.c.status))
    counts = {status.value: 0 for status in TripStatus}
    counts.update({row[0]: row[1] for row in rows})
    return counts


async def set_trip_dead_letter_status(
    db: Db, trip_id: int, compensation: str, status: str, at: datetime | None = None
) -> bool:
    return await changed_one_row(
        db,
        sa.update(dead_letters)
        .where(dead_letters.c.trip_id == trip_id, dead_letters.c.compensation == compensation)
        .values(status=status, updated_at=at or utcnow()),
    )
