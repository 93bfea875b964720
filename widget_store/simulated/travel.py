"""The simulated travel services a trip is booked with: a car rental, a hotel and an airline.

Each service books by the caller's `booking_key` and is idempotent by it: booking the same key
again returns the confirmation already issued and books nothing new. The behaviours a saga
has to cope with are those of the trip-booking tutorial the trip saga comes from:

- the hotel is down on the first try for each booking key (`TravelServiceUnavailable`, a
  transient error: retrying later succeeds);
- an item id containing "invalid" is refused for good (`TravelBookingRejected`, a business
  error: retrying cannot help);
- cancelling a booking never made, or already cancelled, does nothing and returns False.

All three services keep one table, `travel_bookings`: a row per service and booking key,
written by the first call that reaches the service with that key (a book, or a cancel of a
key never seen). The row also counts every call that reached the service, so a benchmark can
tell what the services saw, beyond what the saga reported:

- a *duplicate side effect* is a booking made twice for one trip: for one `(trip_id, kind)`,
  every confirmation issued after the first is a duplicate. Idempotency by booking key
  prevents it as long as the caller reuses its key; a caller that books the same leg under
  a fresh key (a lost key, a restarted saga that derives its keys anew) makes one.
- a *repeated call* is a call that found its work already done: a book of a key already
  confirmed (answered with the same confirmation), or a cancel of a booking already
  cancelled. It is harmless here, thanks to the key, but shows at-least-once delivery at
  work (an activity run again after a worker died before reporting it done, say).

Retries of the hotel's transient failure are neither: they are the calls the behaviour asks for.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

# The port's names, re-exported: the benchmark's Temporal side imports them from here.
from widget_store.travel import TRIP_LEGS as TRIP_LEGS
from widget_store.travel import TravelBookingRejected as TravelBookingRejected
from widget_store.travel import TravelService as TravelService
from widget_store.travel import TravelServiceUnavailable as TravelServiceUnavailable
from widget_store.travel import TripLeg as TripLeg

travel_metadata = sa.MetaData()

travel_bookings = sa.Table(
    "travel_bookings",
    travel_metadata,
    # Which service: each has its own space of booking keys, as separate companies would.
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("booking_key", sa.String(200), primary_key=True),
    # NULL only for a row made by a cancel of a key the service had never seen.
    sa.Column("trip_id", sa.String(200), nullable=True),
    sa.Column("item_id", sa.Text, nullable=True),
    # unavailable | rejected | unknown (no booking yet) -> booked -> cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("confirmation", sa.String(32), nullable=True, unique=True),
    sa.Column("book_calls", sa.Integer, nullable=False),
    sa.Column("cancel_calls", sa.Integer, nullable=False),
    sa.Column("repeated_calls", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_travel_bookings_trip_id", "trip_id"),
)

_PREFIXES: Mapping[TripLeg, str] = {"car": "CAR", "hotel": "HTL", "flight": "FLT"}


def _insert(dialect: str) -> Any:
    # INSERT ... ON CONFLICT is spelled the same on both backends, but SQLAlchemy builds it
    # from each dialect's own insert().
    if dialect == "postgresql":
        return postgresql.insert(travel_bookings)
    if dialect == "sqlite":
        return sqlite.insert(travel_bookings)
    raise ValueError(f"the travel services run on PostgreSQL or SQLite, not {dialect}")


# The services' statements are built once per dialect (and per behaviour), their values
# bound at each call: building an upsert this size anew costs SQLAlchemy about 2 ms of
# CPU per call, against 0.6 ms for executing one built before.


@functools.cache
def _book_statement(dialect: str, down: bool, invalid: bool) -> Any:
    """A book call, whatever it finds: see `SimulatedTravelService.book`."""
    table = travel_bookings
    candidate = sa.bindparam("b_candidate", type_=sa.String(32))
    now = sa.bindparam("b_now", type_=sa.Float)
    statement = _insert(dialect).values(
        kind=sa.bindparam("b_kind"),
        booking_key=sa.bindparam("b_key"),
        trip_id=sa.bindparam("b_trip"),
        item_id=sa.bindparam("b_item"),
        status=sa.bindparam("b_first_status"),
        confirmation=sa.bindparam("b_first_confirmation"),
        book_calls=1,
        cancel_calls=0,
        repeated_calls=0,
        created_at=now,
        updated_at=now,
    )
    # ... and to a key seen before, its row locked by the conflict, so concurrent calls
    # with one key queue up and the later ones see the first one's confirmation. A key
    # confirmed before keeps its confirmation (a repeated call, even once cancelled); a
    # row made by a cancel of an unseen key has had no book call yet (the hotel's first
    # try is still to come).
    confirmed = table.c.confirmation.is_not(None)
    not_yet: list[tuple[Any, Any]] = []
    if down:
        not_yet.append((table.c.book_calls == 0, "unavailable"))
    if invalid:
        not_yet.append((sa.true(), "rejected"))
    status = sa.case((confirmed, table.c.status), *not_yet, else_="booked")
    confirmation = sa.case(
        (confirmed, table.c.confirmation),
        *((when, None) for when, _ in not_yet),
        else_=candidate,
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.kind, table.c.booking_key],
        set_={
            "book_calls": table.c.book_calls + 1,
            "repeated_calls": table.c.repeated_calls + sa.case((confirmed, 1), else_=0),
            # A row made by a cancel of an unseen key learns its trip now.
            "trip_id": sa.func.coalesce(table.c.trip_id, statement.excluded.trip_id),
            "item_id": sa.func.coalesce(table.c.item_id, statement.excluded.item_id),
            "status": status,
            "confirmation": confirmation,
            "updated_at": now,
        },
    ).returning(table.c.confirmation, table.c.status)


@functools.cache
def _cancel_statement(dialect: str) -> Any:
    """A cancel call's record of itself, returning the status as it was: this statement
    leaves it alone, and the row stays locked until `_SET_STATUS`, so two cancels cannot
    both win."""
    table = travel_bookings
    now = sa.bindparam("b_now", type_=sa.Float)
    statement = _insert(dialect).values(
        kind=sa.bindparam("b_kind"),
        booking_key=sa.bindparam("b_key"),
        trip_id=None,
        item_id=None,
        status="unknown",
        book_calls=0,
        cancel_calls=1,
        repeated_calls=0,
        created_at=now,
        updated_at=now,
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.kind, table.c.booking_key],
        set_={
            "cancel_calls": table.c.cancel_calls + 1,
            "repeated_calls": table.c.repeated_calls
            + sa.case((table.c.status == "cancelled", 1), else_=0),
            "updated_at": now,
        },
    ).returning(table.c.status)


_SET_STATUS = (
    sa.update(travel_bookings)
    .where(
        travel_bookings.c.kind == sa.bindparam("b_kind"),
        travel_bookings.c.booking_key == sa.bindparam("b_key"),
    )
    .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_now"))
)


class SimulatedTravelService:
    """A travel service backed by `travel_bookings`; see the module docstring."""

    def __init__(self, engine: AsyncEngine, kind: TripLeg, *, down_on_first_try: bool) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        _book_statement(self._dialect, down_on_first_try, False)  # an unknown dialect fails here
        # On PostgreSQL a statement that is a whole call commits by itself (no BEGIN, no
        # COMMIT round trips). SQLite's BEGIN is local, and the store's SQLite engines issue
        # it themselves (BEGIN IMMEDIATE for writers), which autocommit would leave open.
        self._autocommit = engine.dialect.name == "postgresql"
        self._one_statement = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._autocommit else engine
        )
        self._kind: TripLeg = kind
        self._down_on_first_try = down_on_first_try

    @property
    def kind(self) -> TripLeg:
        """Which leg of a trip this service books."""
        return self._kind

    async def book(self, booking_key: str, item_id: str, trip_id: str) -> str:
        """Book `item_id` for `trip_id` under `booking_key` and return the confirmation.

        The same key again returns the same confirmation and books nothing (a repeated call),
        even once the booking is cancelled: a key names one booking for good. Raises
        `TravelServiceUnavailable` (the hotel, on the key's first try) or
        `TravelBookingRejected` (an item id containing "invalid"); the call is counted
        either way, because it reached the service.
        """
        # The call's outcome is decided in the one statement that records it, so that a
        # booking is one round trip (in autocommit), as a call to a real service would be:
        # what this call would do to a key it is the first to reach, and to one seen before.
        down = self._down_on_first_try
        invalid = "invalid" in item_id.lower()
        candidate = f"{_PREFIXES[self._kind]}-{secrets.token_hex(5).upper()}"
        first = "unavailable" if down else "rejected" if invalid else "booked"
        statement = _book_statement(self._dialect, down, invalid)
        values = {
            "b_kind": self._kind,
            "b_key": booking_key,
            "b_trip": trip_id,
            "b_item": item_id,
            "b_first_status": first,
            "b_first_confirmation": candidate if first == "booked" else None,
            "b_candidate": candidate,
            "b_now": time.time(),
        }
        async with self._one_statement.connect() as conn:
            row = (await conn.execute(statement, values)).one()
            if not self._autocommit:
                await conn.commit()
        # Raised only once the statement has committed: the call was still counted.
        if row.confirmation is not None:
            return str(row.confirmation)
        if row.status == "unavailable":
            raise TravelServiceUnavailable(f"the {self._kind} service is down, try later")
        raise TravelBookingRejected(f"{item_id!r} cannot be booked")

    async def cancel(self, booking_key: str) -> bool:
        """Cancel the booking made under `booking_key`; True if this call cancelled it.

        A key never booked (never seen, or only refused or failed) or already cancelled
        returns False and changes nothing but the call counts.
        """
        now = time.time()
        async with self._engine.begin() as conn:
            found = await conn.execute(
                _cancel_statement(self._dialect),
                {"b_kind": self._kind, "b_key": booking_key, "b_now": now},
            )
            if found.scalar_one() != "booked":
                return False
            await conn.execute(
                _SET_STATUS,
                {"b_kind": self._kind, "b_key": booking_key, "b_status": "cancelled", "b_now": now},
            )
        return True


class CarRental(SimulatedTravelService):
    """Rents cars; never down."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, "car", down_on_first_try=False)


class Hotel(SimulatedTravelService):
    """Books rooms; down on the first try for each booking key."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, "hotel", down_on_first_try=True)


class Airline(SimulatedTravelService):
    """Books flights; never down."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, "flight", down_on_first_try=False)


def travel_services(engine: AsyncEngine) -> dict[TripLeg, SimulatedTravelService]:
    """The three services on one engine, by the leg each books, in booking order."""
    return {"car": CarRental(engine), "hotel": Hotel(engine), "flight": Airline(engine)}


async def create_travel_tables(engine: AsyncEngine) -> None:
    """Create `travel_bookings` where it does not exist (benchmarks and tests; the store
    itself gets its tables from its migrations)."""
    async with engine.begin() as conn:
        await conn.run_sync(travel_metadata.create_all)


@dataclass(frozen=True)
class TripBookings:
    """What the services hold for one trip, and how often they were called for it."""

    trip_id: str
    # Per leg: how many confirmations were issued (more than one is a duplicate side
    # effect), and how many of those are still live (booked, not cancelled).
    confirmations: Mapping[str, int]
    live: Mapping[str, int]
    book_calls: int
    cancel_calls: int
    repeated_calls: int

    @property
    def duplicates(self) -> int:
        """Bookings made beyond one per leg of this trip."""
        return sum(max(0, count - 1) for count in self.confirmations.values())

    @property
    def fully_booked(self) -> bool:
        """Exactly one live booking for each leg: what a BOOKED trip must leave."""
        return all(self.live.get(leg, 0) == 1 for leg in TRIP_LEGS)

    @property
    def nothing_live(self) -> bool:
        """No live booking on any leg: what a ROLLED_BACK trip must leave."""
        return not any(self.live.values())


@dataclass(frozen=True)
class TravelCounts:
    """The services' own account of every trip they saw."""

    trips: Mapping[str, TripBookings] = field(default_factory=dict)
    # Cancels of keys never booked and so tied to no trip.
    unknown_cancel_calls: int = 0

    @property
    def bookings(self) -> int:
        """Confirmations issued, live or cancelled."""
        return sum(sum(trip.confirmations.values()) for trip in self.trips.values())

    @property
    def duplicates(self) -> int:
        """Duplicate side effects: bookings made beyond one per (trip, leg)."""
        return sum(trip.duplicates for trip in self.trips.values())

    @property
    def book_calls(self) -> int:
        """Book calls that reached a service, including the hotel's failed first tries."""
        return sum(trip.book_calls for trip in self.trips.values())

    @property
    def cancel_calls(self) -> int:
        """Cancel calls that reached a service."""
        return sum(trip.cancel_calls for trip in self.trips.values()) + self.unknown_cancel_calls

    @property
    def repeated_calls(self) -> int:
        """Calls that found their work already done (see the module docstring)."""
        return sum(trip.repeated_calls for trip in self.trips.values())


async def read_travel_counts(
    engine: AsyncEngine, trip_ids: Collection[str] | None = None
) -> TravelCounts:
    """Bookings per trip, duplicates and calls, as the services recorded them; all trips,
    or only `trip_ids`."""
    table = travel_bookings
    query = sa.select(
        table.c.trip_id,
        table.c.kind,
        table.c.status,
        table.c.confirmation,
        table.c.book_calls,
        table.c.cancel_calls,
        table.c.repeated_calls,
    )
    if trip_ids is not None:
        query = query.where(table.c.trip_id.in_(list(trip_ids)))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    confirmations: defaultdict[str, Counter[str]] = defaultdict(Counter)
    live: defaultdict[str, Counter[str]] = defaultdict(Counter)
    calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
    unknown_cancels = 0
    for row in rows:
        if row.trip_id is None:
            unknown_cancels += row.cancel_calls
            continue
        if row.confirmation is not None:
            confirmations[row.trip_id][row.kind] += 1
        if row.status == "booked":
            live[row.trip_id][row.kind] += 1
        calls[row.trip_id].update(
            book=row.book_calls, cancel=row.cancel_calls, repeated=row.repeated_calls
        )
    trips = {
        trip_id: TripBookings(
            trip_id=trip_id,
            confirmations=dict(confirmations[trip_id]),
            live=dict(live[trip_id]),
            book_calls=counted["book"],
            cancel_calls=counted["cancel"],
            repeated_calls=counted["repeated"],
        )
        for trip_id, counted in calls.items()
    }
    return TravelCounts(trips=trips, unknown_cancel_calls=unknown_cancels)
