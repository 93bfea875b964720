"""The trip's steps and compensations: each a durable DBOS step, each idempotent.

A leg is booked by one step against its own travel service, under a booking key derived
from the trip's idempotency key and the leg (`booking_key`); its undo cancels under the
same key. The services book and cancel once per key, and every write here is keyed or
conditional (`queries/trips.py`), so a step that did its work and crashed before its
checkpoint runs again and changes nothing. Each step logs to the trip's history, and so
to the outbox, in the same transaction as the change it records.

The saga that strings them together is `trip.py`. Checkpoint names are
`checkpoints.Checkpoint`.
"""

from __future__ import annotations

import asyncio
import secrets

from widget_store import metrics, order_watch
from widget_store.checkpoints import Checkpoint
from widget_store.domain import LegOutcome, TripEvent, TripRequest, TripStatus, Undone, UndoResult
from widget_store.durability import services, step, write, write_alone
from widget_store.metrics import CompensationResult
from widget_store.queries import trips as queries
from widget_store.queries.dead_letters import park_dead_letter
from widget_store.travel import TRIP_LEGS, TravelBookingRejected, TripLeg

# The backoff between a leg's attempts: 10 ms after the first failure, doubling, at most
# 1 s. The same as the Temporal side of the trip benchmark (bench.temporal_trip.shared.
# TripPolicy), so that the benchmark compares engines, not backoffs.
RETRY_FIRST_S = 0.01
RETRY_MAX_S = 1.0

FAILED = {
    "car": TripEvent.CAR_FAILED,
    "hotel": TripEvent.HOTEL_FAILED,
    "flight": TripEvent.FLIGHT_FAILED,
}
CANCELLED = {
    "car": TripEvent.CAR_CANCELLED,
    "hotel": TripEvent.HOTEL_CANCELLED,
    "flight": TripEvent.FLIGHT_CANCELLED,
}


def booking_key(trip_key: str, leg: TripLeg) -> str:
    """The key a leg is booked and cancelled under: the same for every run of the step."""
    return f"{trip_key}:{leg}"


def retry_delay_s(failures: int) -> float:
    """How long to wait after the `failures`-th failed attempt of a leg (1, 2, ...)."""
    return float(min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S))


# --- forward steps ---------------------------------------------------------------------


@step(Checkpoint.BOOK_CAR)
async def book_car(trip_key: str, request: TripRequest) -> LegOutcome:
    """Create the trip (PENDING, once per key), then rent its car.

    The trip row comes first because the services book for its ID. A second run finds
    the first run's trip (the key is unique) and the car booked under the same key.
    """
    async with write_alone() as db:  # one statement on PostgreSQL (a second: a rerun's read)
        trip, _created = await queries.create_trip_and_log(
            db, trip_key=trip_key, request=request, access_token=secrets.token_urlsafe(24)
        )
    return await _book("car", trip_key, trip.trip_id, request)


@step(Checkpoint.BOOK_HOTEL)
async def book_hotel(trip_key: str, trip_id: int, request: TripRequest) -> LegOutcome:
    """Book the trip's hotel room (the hotel is down on a booking's first try)."""
    return await _book("hotel", trip_key, trip_id, request)


@step(Checkpoint.BOOK_FLIGHT)
async def book_flight(trip_key: str, trip_id: int, request: TripRequest) -> LegOutcome:
    """Book the trip's flight; with it, the trip is BOOKED (in the same transaction)."""
    return await _book("flight", trip_key, trip_id, request)


async def _book(leg: TripLeg, trip_key: str, trip_id: int, request: TripRequest) -> LegOutcome:
    """Ask the leg's service up to `request.attempts` times, with backoff, for anything
    but a refusal; record what it confirmed, or why not (not raised: the saga then rolls
    back). A call that failed may still have booked, which is why the saga registers the
    leg's undo, keyed alike, before this step.
    """
    service = services().travel[leg]
    key = booking_key(trip_key, leg)
    attempts = 0
    confirmation: str | None = None
    refusal: str | None = None
    while confirmation is None:
        attempts += 1
        try:
            confirmation = await service.book(key, request.item(leg), str(trip_id))
        except TravelBookingRejected as error:
            refusal = f"the {leg} was refused: {error}"
            break
        except Exception as error:  # the service down, a timeout, a database blip
            if attempts >= request.attempts:
                refusal = f"the {leg} service failed {attempts} time(s): {error}"
                break
            await asyncio.sleep(retry_delay_s(attempts))
    ended = False
    async with write_alone() as db:  # one statement either way, on PostgreSQL
        if confirmation is None:
            await queries.append_trip_events(db, trip_id, [(FAILED[leg], (refusal or "")[:500])])
        else:
            tries = "" if attempts == 1 else f" (after {attempts} attempts)"
            ends = leg == TRIP_LEGS[-1]
            recorded = await queries.record_leg_and_log(
                db, trip_id, leg, confirmation, f"{confirmation}{tries}", ends=ends
            )
            ended = recorded and ends
    if ended:  # the trip's request waits for its end, and only for that
        order_watch.announce(trip_key)
    return LegOutcome(trip_id, attempts, confirmation=confirmation, refusal=refusal)


# --- compensations, named for what they undo -------------------------------------------
# Each is defined whatever the service knows of the booking: booked (cancelled now), never
# booked, cancelled already (nothing to undo, which is success). A failure is raised, and
# the saga retries the undo with backoff, then parks it for an operator.


@step(Checkpoint.CANCEL_CAR, compensation=TripEvent.CAR_CANCELLED)
async def cancel_car(trip_key: str, reason: str) -> Undone:
    """Undo book_car. Always the last undo to run, so it also ends the trip ROLLED_BACK
    with the reason, in the same transaction: nobody sees a rolled-back trip whose
    history is unfinished."""
    return await _cancel("car", trip_key, reason)


@step(Checkpoint.CANCEL_HOTEL, compensation=TripEvent.HOTEL_CANCELLED)
async def cancel_hotel(trip_key: str, reason: str) -> Undone:
    """Undo book_hotel."""
    return await _cancel("hotel", trip_key, reason)


@step(Checkpoint.CANCEL_FLIGHT, compensation=TripEvent.FLIGHT_CANCELLED)
async def cancel_flight(trip_key: str, reason: str) -> Undone:
    """Undo book_flight."""
    return await _cancel("flight", trip_key, reason)


async def _cancel(leg: TripLeg, trip_key: str, reason: str) -> Undone:
    """Cancel the leg under its booking key; the service cancels once per key, the log
    entry is once-only, and only a PENDING trip is ended."""
    async with services().engine.connect() as db:
        trip = await queries.trip_by_key(db, trip_key)
    if trip is None:  # the first step never got as far as creating it
        return Undone(UndoResult.NOTHING_TO_UNDO, "no trip was created")
    cancelled = await services().travel[leg].cancel(booking_key(trip_key, leg))
    confirmation = getattr(trip, f"{leg}_confirmation")
    if cancelled:
        undone = Undone(UndoResult.DONE, f"cancelled {confirmation or booking_key(trip_key, leg)}")
    elif confirmation:
        undone = Undone(UndoResult.NOTHING_TO_UNDO, f"{confirmation} already cancelled")
    else:
        undone = Undone(UndoResult.NOTHING_TO_UNDO, "never booked: nothing to cancel")
    ended = False
    async with write() as db:
        log = [(CANCELLED[leg], undone.detail)]
        if leg == TRIP_LEGS[0]:
            ended = await queries.end_trip(db, trip.trip_id, TripStatus.ROLLED_BACK, reason)
            if ended:
                log.append((TripEvent.ROLLED_BACK, reason))
        await queries.append_trip_events(db, trip.trip_id, log)
    if ended:
        order_watch.announce(trip_key)
    return undone


# --- parked compensations --------------------------------------------------------------


@step(Checkpoint.PARK_TRIP_COMPENSATION)
async def park_trip_compensation(
    trip_key: str, compensation: str, error: str, attempts: int
) -> None:
    """Record a trip's compensation that keeps failing as a dead letter, and log it.

    Once: the dead letter is keyed by (trip, compensation) and updated in place; the log
    entry carries the attempt count, so parking again later logs again.
    """
    async with write() as db:
        trip = await queries.trip_by_key(db, trip_key)
        if trip is None:
            return
        await park_dead_letter(
            db,
            trip_id=trip.trip_id,
            workflow_id=trip_key,
            compensation=compensation,
            error=error,
            attempts=attempts,
        )
        detail = f"{compensation} after {attempts} failed attempts: {error}"[:500]
        await queries.append_trip_event(db, trip.trip_id, TripEvent.COMPENSATION_PARKED, detail)
    metrics.compensation_ran(compensation, CompensationResult.PARKED)
    order_watch.announce(trip_key)


@step(Checkpoint.RETRY_TRIP_COMPENSATION)
async def retry_trip_compensation(trip_key: str, compensation: str) -> None:
    """The parked compensation is about to be tried again (a status set, and logged)."""
    async with write() as db:
        trip = await queries.trip_by_key(db, trip_key)
        if trip is None:
            return
        await queries.set_trip_dead_letter_status(db, trip.trip_id, compensation, "retrying")
        await queries.append_trip_event(
            db, trip.trip_id, TripEvent.COMPENSATION_RETRIED, compensation
        )
    order_watch.announce(trip_key)


@step(Checkpoint.RESOLVE_TRIP_COMPENSATION)
async def resolve_trip_compensation(trip_key: str, compensation: str) -> None:
    """The parked compensation finally succeeded (a status set: the same twice)."""
    async with write() as db:
        trip = await queries.trip_by_key(db, trip_key)
        if trip is not None:
            await queries.set_trip_dead_letter_status(db, trip.trip_id, compensation, "resolved")
