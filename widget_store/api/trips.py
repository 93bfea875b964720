"""Trips: book a car, a hotel and a flight as one saga, and read a trip back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from widget_store import service
from widget_store.api.deps import Reader, SettingsDep, has_admin_token, same_secret
from widget_store.api.models import ErrorOut, TripDetailsOut, TripIn, TripOut
from widget_store.api.orders import IdempotencyKey
from widget_store.domain import NotAuthorized, TripNotFound, TripRequest
from widget_store.queries import trips as queries

router = APIRouter(tags=["trips"])

TripId = Annotated[int, Path(ge=1, le=2**62)]
TripToken = Annotated[
    str | None, Query(max_length=64, description="the trip's token, from the booking's answer")
]


@router.post(
    "/trips/{idempotency_key}",
    response_model=TripOut,
    responses={
        409: {"model": ErrorOut, "description": "the key was used for another request"},
        503: {"model": ErrorOut, "description": "still running: retry with the same key"},
    },
)
async def book_trip(idempotency_key: IdempotencyKey, trip: TripIn) -> dict[str, Any]:
    """Book the car, then the hotel, then the flight; reply once booked or rolled back."""
    request = TripRequest(
        user_id=trip.user_id,
        car_id=trip.car_id,
        hotel_id=trip.hotel_id,
        flight_id=trip.flight_id,
        attempts=trip.attempts,
    )
    return asdict(await service.book_trip(idempotency_key, request))


@router.get(
    "/trips/{trip_id}",
    response_model=TripDetailsOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
async def get_trip(
    trip_id: TripId,
    request: Request,
    db: Reader,
    settings: SettingsDep,
    token: TripToken = None,
) -> dict[str, Any]:
    """A trip: what was asked for, what each service confirmed, what was undone, and its
    history. In production it needs the trip's `token` (or the admin token)."""
    trip = await queries.trip_details(db, trip_id)
    if trip is None:
        raise TripNotFound(f"unknown trip {trip_id}")
    owner = same_secret(token, trip["access_token"]) or has_admin_token(request)
    if settings.is_production and not owner:
        raise NotAuthorized("this trip can be read only with its token")
    return trip_details(trip)


def trip_details(trip: dict[str, Any]) -> dict[str, Any]:
    """The trip as a reader sees it (never its token)."""
    view = service.trip_view(trip, [event["type"] for event in trip["events"]])
    return {
        **{k: v for k, v in asdict(view).items() if k not in ("trip_token", "trip_url")},
        "user_id": trip["user_id"],
        "items": {"car": trip["car_id"], "hotel": trip["hotel_id"], "flight": trip["flight_id"]},
        "attempts": trip["attempts"],
        "created_at": trip["created_at"],
        "updated_at": trip["updated_at"],
        "events": trip["events"],
    }
