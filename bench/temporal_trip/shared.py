"""What the workflow, its activities, the worker and the starter share: names and payloads.

Payloads are plain dataclasses, which Temporal's default converter carries as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_QUEUE = "trip-bookings"
BOOKED = "BOOKED"
ROLLED_BACK = "ROLLED_BACK"


@dataclass(frozen=True)
class TripPolicy:
    """How the saga retries and when Temporal gives up on a silent worker.

    Booking steps try up to the trip's `attempts` times, waiting `retry_initial_s` after the
    first failure and twice as long after each next one (at most `retry_max_s`); undos retry
    the same way without a limit, since an undo must happen in the end. `activity_timeout_s`
    is the start-to-close timeout of each activity, and `task_timeout_s` the workflow task
    timeout: after a worker dies, Temporal hands its unfinished tasks to another worker only
    once these run out, so they bound the recovery time.
    """

    retry_initial_s: float = 0.01
    retry_max_s: float = 1.0
    activity_timeout_s: float = 10.0
    task_timeout_s: float = 10.0


@dataclass(frozen=True)
class TripInput:
    """One trip to book, as the starter hands it to the workflow."""

    user_id: str
    car_id: str
    hotel_id: str
    flight_id: str
    attempts: int
    policy: TripPolicy = field(default_factory=TripPolicy)


@dataclass(frozen=True)
class LegBooking:
    """One activity's order to a travel service."""

    booking_key: str
    item_id: str
    trip_id: str


@dataclass
class TripResult:
    """The workflow's answer, in the shape of the store's `POST /trips/{key}` reply:
    `status` is BOOKED or ROLLED_BACK, `bookings` what each service confirmed, `cancelled`
    the undos that ran, newest first, and `reason` why the trip was rolled back."""

    trip_id: str
    status: str
    bookings: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    reason: str | None = None


def booking_key(trip_id: str, leg: str) -> str:
    """The key a leg is booked under: derived from the trip alone, so that an activity
    run again (after a worker died, say) asks the service for the same booking."""
    return f"{trip_id}:{leg}"
