"""`POST /trips/{key}` and `GET /trips/{id}`: idempotency, bad input, who may read a trip."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.helpers import ADMIN_TOKEN, Store

BODY = {
    "user_id": "traveller-1",
    "car_id": "compact-car",
    "hotel_id": "harbour-hotel",
    "flight_id": "LH-400",
    "attempts": 3,
}


def key() -> str:
    return f"trip-{uuid.uuid4().hex}"


def test_the_same_key_returns_the_same_trip_and_books_nothing_more(store: Store) -> None:
    trip_key = key()
    first = store.http.post(f"/trips/{trip_key}", json=BODY)
    again = store.http.post(f"/trips/{trip_key}", json=BODY)

    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json()
    assert first.json()["status"] == "BOOKED"
    assert sorted(first.json()["bookings"]) == ["car", "flight", "hotel"]
    assert store.scalar("SELECT count(*) FROM trips") == 1
    assert store.scalar("SELECT sum(book_calls) FROM travel_bookings") == 4  # hotel: twice


def test_another_body_under_a_used_key_is_a_conflict(store: Store) -> None:
    trip_key = key()
    store.http.post(f"/trips/{trip_key}", json=BODY).raise_for_status()

    other = store.http.post(f"/trips/{trip_key}", json={**BODY, "hotel_id": "other-hotel"})

    assert other.status_code == 409
    assert "different trip" in other.json()["detail"]


def test_a_checkout_key_cannot_be_taken_for_a_trip(store: Store) -> None:
    checkout_key = key()
    assert store.checkout(key=checkout_key).status_code == 200

    taken = store.http.post(f"/trips/{checkout_key}", json=BODY)

    assert taken.status_code == 409, taken.text


@pytest.mark.parametrize(
    "body",
    [
        {**BODY, "attempts": 0},
        {**BODY, "attempts": 21},
        {**BODY, "attempts": "3"},
        {**BODY, "attempts": True},
        {**BODY, "car_id": ""},
        {**BODY, "car_id": "   "},
        {**BODY, "hotel_id": "x" * 201},
        {**BODY, "flight_id": "LH\x00400"},
        {**BODY, "flight_id": 400},
        {k: v for k, v in BODY.items() if k != "user_id"},
        {**BODY, "extra": 1},
        [],
        None,
    ],
)
def test_bad_trip_input_is_a_clear_422(store: Store, body: Any) -> None:
    response = store.http.post(f"/trips/{key()}", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert store.scalar("SELECT count(*) FROM trips") == 0


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b'{"attempts": 1e400}'])
def test_unreadable_trip_bodies_are_refused_without_a_500(store: Store, raw: bytes) -> None:
    response = store.http.post(
        f"/trips/{key()}", content=raw, headers={"Content-Type": "application/json"}
    )

    assert 400 <= response.status_code < 500, response.text


def test_a_bad_key_is_refused(store: Store) -> None:
    assert store.http.post("/trips/has~tilde", json=BODY).status_code == 422
    assert store.http.post(f"/trips/{'k' * 129}", json=BODY).status_code == 422


def test_an_unknown_trip_is_404(store: Store) -> None:
    assert store.http.get("/trips/424242").status_code == 404


def test_a_trip_reads_back_with_its_history(store: Store) -> None:
    booked = store.http.post(f"/trips/{key()}", json={**BODY, "flight_id": "invalid-flight"})
    trip = store.http.get(booked.json()["trip_url"]).json()

    assert trip["status"] == "ROLLED_BACK"
    assert trip["items"] == {
        "car": "compact-car",
        "hotel": "harbour-hotel",
        "flight": "invalid-flight",
    }
    assert trip["cancelled"] == ["cancel_flight", "cancel_hotel", "cancel_car"]
    assert [e["type"] for e in trip["events"]] == [
        "RequestTrip_ok",
        "BookCar_ok",
        "BookHotel_ok",
        "BookFlight_failed",
        "CancelFlight",
        "CancelHotel",
        "CancelCar",
        "trip_rolled_back",
    ]
    assert "trip_token" not in trip


def test_trip_events_go_to_the_outbox_as_the_trip_aggregate(store: Store) -> None:
    trip_id = store.http.post(f"/trips/{key()}", json=BODY).json()["trip_id"]

    rows = store.rows(
        "SELECT aggregate, seq, type FROM outbox WHERE aggregate_id = :t AND aggregate = 'trip'"
        " ORDER BY seq",
        t=trip_id,
    )

    assert [(r["seq"], r["type"]) for r in rows] == [
        (1, "RequestTrip_ok"),
        (2, "BookCar_ok"),
        (3, "BookHotel_ok"),
        (4, "BookFlight_ok"),
        (5, "trip_booked"),
    ]


def test_in_production_a_trip_is_read_only_with_its_token_or_the_admin_token(
    production: Store,
) -> None:
    booked = production.http.post(f"/trips/{key()}", json=BODY).json()
    trip_id = booked["trip_id"]

    assert production.http.get(f"/trips/{trip_id}").status_code == 401
    assert production.http.get(f"/trips/{trip_id}?token=wrong").status_code == 401
    assert production.http.get(booked["trip_url"]).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert production.http.get(f"/trips/{trip_id}", headers=admin).status_code == 200
    assert production.http.get("/ops/trips").status_code == 401
