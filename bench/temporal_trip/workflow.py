"""The trip saga as a Temporal workflow: book the car, then the hotel, then the flight; on a
failure, undo newest first, the failing leg included.

The failing leg is undone too because its outcome is unknown: the service may have booked it
and the answer been lost. Its cancel is harmless when nothing was booked.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

# Passed through rather than re-imported into each workflow's sandbox: they hold no workflow
# state, and re-importing SQLAlchemy for every trip would cost more than the trip.
with workflow.unsafe.imports_passed_through():
    from bench.temporal_trip.activities import TripActivities
    from bench.temporal_trip.shared import (
        BOOKED,
        ROLLED_BACK,
        LegBooking,
        TripInput,
        TripPolicy,
        TripResult,
        booking_key,
    )
    from widget_store.simulated.travel import TRIP_LEGS, TripLeg

BOOK = {
    "car": TripActivities.book_car,
    "hotel": TripActivities.book_hotel,
    "flight": TripActivities.book_flight,
}
CANCEL = {
    "car": TripActivities.cancel_car,
    "hotel": TripActivities.cancel_hotel,
    "flight": TripActivities.cancel_flight,
}


def _retries(policy: TripPolicy, attempts: int) -> RetryPolicy:
    """Exponential backoff from the policy; `attempts` 0 means no limit."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=policy.retry_initial_s),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=policy.retry_max_s),
        maximum_attempts=attempts,
    )


@workflow.defn
class TripWorkflow:
    """One trip; its workflow ID is the trip's idempotency key and its trip ID."""

    @workflow.run
    async def run(self, trip: TripInput) -> TripResult:
        """Book the three legs in order, or roll back what may have been booked."""
        trip_id = workflow.info().workflow_id
        policy = trip.policy
        timeout = timedelta(seconds=policy.activity_timeout_s)
        items = {"car": trip.car_id, "hotel": trip.hotel_id, "flight": trip.flight_id}
        result = TripResult(trip_id=trip_id, status=BOOKED)
        to_undo: list[TripLeg] = []
        try:
            for leg in TRIP_LEGS:
                # Listed before the call, so that a leg whose booking failed is undone too.
                to_undo.append(leg)
                result.bookings[leg] = await workflow.execute_activity_method(
                    BOOK[leg],
                    LegBooking(booking_key(trip_id, leg), items[leg], trip_id),
                    start_to_close_timeout=timeout,
                    retry_policy=_retries(policy, trip.attempts),
                )
        except ActivityError as failure:
            result.status = ROLLED_BACK
            result.reason = str(failure.cause or failure)
            for leg in reversed(to_undo):
                await workflow.execute_activity_method(
                    CANCEL[leg],
                    booking_key(trip_id, leg),
                    start_to_close_timeout=timeout,
                    # No attempt limit: a trip may not stay half booked.
                    retry_policy=_retries(policy, 0),
                )
                result.cancelled.append(f"cancel_{leg}")
        return result
