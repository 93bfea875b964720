"""The travel-service port: what a trip's saga steps ask of a car rental, a hotel and an
airline, and the two ways they can fail. The simulated services behind it live in
`widget_store/simulated/travel.py`; only `create_app` chooses them.
"""

from __future__ import annotations

from typing import Literal, Protocol

TripLeg = Literal["car", "hotel", "flight"]
# The order a trip books its legs in; compensations run in the reverse order.
TRIP_LEGS: tuple[TripLeg, ...] = ("car", "hotel", "flight")


class TravelServiceUnavailable(Exception):
    """A transient failure: the service is down now and worth retrying with backoff."""


class TravelBookingRejected(Exception):
    """A business error (an invalid item): the service refuses for good, so do not retry."""


class TravelService(Protocol):
    """One travel service as a saga step sees it."""

    @property
    def kind(self) -> TripLeg:
        """Which leg of a trip this service books."""
        ...

    async def book(self, booking_key: str, item_id: str, trip_id: str) -> str:
        """Book `item_id` for `trip_id` and return the confirmation. Idempotent by key."""
        ...

    async def cancel(self, booking_key: str) -> bool:
        """Cancel the booking made under `booking_key`; True if this call cancelled it."""
        ...
