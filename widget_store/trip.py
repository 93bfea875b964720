"""THE TRIP SAGA: book a car, then a hotel, then a flight, or none of them.

One DBOS workflow per trip (`book_trip.v1`); its workflow ID is the client's idempotency
key. Each leg is one step against its own travel service (`trip_steps.py`), with its undo
registered on the same `Saga` helper as the checkout's *before* the step runs:

    book_car      create the trip, rent the car          <- cancel_car (ends it ROLLED_BACK)
    book_hotel    book the room (down on the first try)   <- cancel_hotel
    book_flight   book the flight; the trip is BOOKED     <- cancel_flight

A leg retries a transient failure inside its step, with backoff, up to the trip's
`attempts`; a refusal (an item containing "invalid") is not retried. Either way the saga
then rolls back newest first, the failing leg's own undo included: its outcome is
unknown (the service may have booked, and its answer been lost), and an undo of what was
never booked is nothing to undo. A booked trip costs five durable operations: the start,
three steps and the completion.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dbos import DBOS, error

from widget_store import trip_steps
from widget_store.checkpoints import Checkpoint, Topic, Workflow
from widget_store.domain import LegOutcome, TripRequest, TripStatus, Undone
from widget_store.durability import services
from widget_store.saga import Saga
from widget_store.travel import TripLeg

INTERNAL_ERROR = "internal error"

# --- the compensations, once, in the order of the legs they undo -----------------------

TripUndo = Callable[[str, str], Awaitable[Undone]]  # (trip key, reason)

COMPENSATIONS: dict[TripLeg, tuple[Checkpoint, TripUndo]] = {
    "car": (Checkpoint.CANCEL_CAR, trip_steps.cancel_car),
    "hotel": (Checkpoint.CANCEL_HOTEL, trip_steps.cancel_hotel),
    "flight": (Checkpoint.CANCEL_FLIGHT, trip_steps.cancel_flight),
}


class ParkedTripCompensations:
    """The trip's dead-letter policy, the checkout's own: park the undo that keeps failing
    (in `dead_letters` and the trip's history), wait for an operator's Retry or the
    automatic retry, and record when it finally succeeds."""

    def __init__(self, trip_key: str) -> None:
        self.trip_key = trip_key

    async def park(self, compensation: str, error: str, attempts: int) -> None:
        await trip_steps.park_trip_compensation(self.trip_key, compensation, error, attempts)
        await DBOS.recv_async(
            Topic.COMPENSATION_RETRY, timeout_seconds=services().dead_letter_retry_s
        )
        await trip_steps.retry_trip_compensation(self.trip_key, compensation)

    async def resolved(self, compensation: str) -> None:
        await trip_steps.resolve_trip_compensation(self.trip_key, compensation)


def new_trip_saga(trip_key: str) -> Saga:
    """The checkout's helper, backing off between a failing undo's attempts as the legs
    do (and as the benchmark's Temporal side does), and parking it after as many
    failures as the checkout's."""
    return Saga(
        first_delay_s=trip_steps.RETRY_FIRST_S,
        max_delay_s=trip_steps.RETRY_MAX_S,
        park_after=services().compensation_attempts,
        dead_letters=ParkedTripCompensations(trip_key),
    )


class LegFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _booked(outcome: LegOutcome) -> LegOutcome:
    if not outcome.booked:
        raise LegFailed(outcome.refusal or "not booked")
    return outcome


# --- the trip ------------------------------------------------------------------------------


@DBOS.workflow(name=Workflow.BOOK_TRIP.value)
async def book_trip_workflow(request: TripRequest) -> str:
    """Book the trip's three legs in order; on any failure, undo every leg tried so far.

    Returns the trip's final status. The workflow ID is the trip's idempotency key.
    """
    trip_key = DBOS.workflow_id
    assert trip_key is not None
    saga = new_trip_saga(trip_key)

    def undo_before(leg: TripLeg) -> None:  # registered before the leg's step: see above
        name, undo = COMPENSATIONS[leg]
        saga.on_rollback(name.value, undo, trip_key)

    try:
        undo_before("car")
        trip_id = _booked(await trip_steps.book_car(trip_key, request)).trip_id
        undo_before("hotel")
        _booked(await trip_steps.book_hotel(trip_key, trip_id, request))
        undo_before("flight")
        _booked(await trip_steps.book_flight(trip_key, trip_id, request))
        return TripStatus.BOOKED.value
    except LegFailed as failure:
        reason = failure.reason
    except (error.DBOSUnexpectedStepError, error.DBOSStepNondeterminismError):
        # The code no longer matches this workflow's history: stop, for an operator.
        raise
    except Exception as failure:  # a bug, or the database gone past every retry
        DBOS.logger.exception("trip %s failed unexpectedly: %r", trip_key, failure)
        reason = INTERNAL_ERROR
    await saga.rollback(reason)  # ends with cancel_car, which ends the trip ROLLED_BACK
    return TripStatus.ROLLED_BACK.value
