"""The trip's activities: each books or cancels one leg with its simulated travel service.

One `TripActivities` per worker process holds the services and so shares their engine. The
services are idempotent by booking key, which is what makes Temporal's at-least-once
activities safe here: an activity run again asks for the same booking and gets it back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from bench.temporal_trip.shared import LegBooking
from widget_store.simulated.travel import TravelBookingRejected, TravelService, TripLeg


class TripActivities:
    """Book and cancel activities for the three legs of a trip."""

    def __init__(self, services: Mapping[TripLeg, TravelService]) -> None:
        self._services = services

    async def _book(self, leg: TripLeg, order: LegBooking) -> str:
        try:
            return await self._services[leg].book(order.booking_key, order.item_id, order.trip_id)
        except TravelBookingRejected as error:
            # A business error: retrying cannot help, so Temporal must not. The transient
            # TravelServiceUnavailable is left as it is, and Temporal retries it by policy.
            raise ApplicationError(
                str(error), type=type(error).__name__, non_retryable=True
            ) from error

    @activity.defn
    async def book_car(self, order: LegBooking) -> str:
        """Rent the trip's car; returns the rental's confirmation."""
        return await self._book("car", order)

    @activity.defn
    async def book_hotel(self, order: LegBooking) -> str:
        """Book the trip's hotel room; returns the hotel's confirmation."""
        return await self._book("hotel", order)

    @activity.defn
    async def book_flight(self, order: LegBooking) -> str:
        """Book the trip's flight; returns the airline's confirmation."""
        return await self._book("flight", order)

    @activity.defn
    async def cancel_car(self, booking_key: str) -> bool:
        """Undo `book_car`; False if there was nothing (left) to cancel."""
        return await self._services["car"].cancel(booking_key)

    @activity.defn
    async def cancel_hotel(self, booking_key: str) -> bool:
        """Undo `book_hotel`; False if there was nothing (left) to cancel."""
        return await self._services["hotel"].cancel(booking_key)

    @activity.defn
    async def cancel_flight(self, booking_key: str) -> bool:
        """Undo `book_flight`; False if there was nothing (left) to cancel."""
        return await self._services["flight"].cancel(booking_key)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, bound to this instance, for the worker to register."""
        return [
            self.book_car,
            self.book_hotel,
            self.book_flight,
            self.cancel_car,
            self.cancel_hotel,
            self.cancel_flight,
        ]
