"""The trip saga's failure matrix, in process on SQLite: every leg x {success, transient
failures within and beyond `attempts`, an invalid item, a crash right after its step}.

Each case asserts the outcome the traveller is told, which undos ran and in which order,
and what the travel services themselves hold afterwards (their own table, not the saga's
account): one live booking per leg for a booked trip, none for a rolled-back one, and
never a second booking of a leg.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS

from tests.conftest import make_settings
from tests.helpers import Store, eventually
from widget_store import faults
from widget_store.checkpoints import TRIP_CRASH_POINTS, Checkpoint
from widget_store.config import Settings
from widget_store.simulated.travel import travel_bookings
from widget_store.travel import TRIP_LEGS, TravelService, TravelServiceUnavailable, TripLeg

pytestmark = pytest.mark.usefixtures("in_process_crashes")

UNDOS = {"car": "cancel_car", "hotel": "cancel_hotel", "flight": "cancel_flight"}
# The hotel is down on each booking's first try: one failed call more than the others.
OWN_FAILURES = {"car": 0, "hotel": 1, "flight": 0}


class SimulatedCrash(BaseException):
    """Stops the running workflow where a SIGKILL would, recording nothing more. A
    BaseException: neither the saga nor DBOS's outcome recording catches it."""


@pytest.fixture
def in_process_crashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def crash() -> None:
        raise SimulatedCrash

    monkeypatch.setattr(faults, "crash", crash)
    yield
    faults.disarm()


@pytest.fixture
def settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """SQLite only: the matrix is about the saga, and it must stay fast."""
    path = tmp_path / "store.sqlite"
    shutil.copy(sqlite_template, path)
    return make_settings(f"sqlite:///{path}")


@dataclass
class Outages:
    """Transient failures the tests order per leg, ahead of each service's own behaviour;
    and undos that fail a number of times before they go through."""

    book: dict[str, int] = field(default_factory=dict)
    cancel: dict[str, int] = field(default_factory=dict)
    # Legs whose book calls wait here until the event is set (a slow service).
    held: dict[str, threading.Event] = field(default_factory=dict)
    reached: threading.Event = field(default_factory=threading.Event)

    def wrap(self, leg: TripLeg, service: TravelService) -> TravelService:
        return FlakyService(leg, service, self)


class FlakyService:
    def __init__(self, leg: TripLeg, inner: TravelService, outages: Outages) -> None:
        self._leg: TripLeg = leg
        self._inner = inner
        self._outages = outages

    @property
    def kind(self) -> TripLeg:
        return self._leg

    async def book(self, booking_key: str, item_id: str, trip_id: str) -> str:
        if (held := self._outages.held.get(self._leg)) is not None:
            self._outages.reached.set()
            while not held.is_set():
                await asyncio.sleep(0.01)
        if self._outages.book.get(self._leg, 0) > 0:
            self._outages.book[self._leg] -= 1
            raise TravelServiceUnavailable(f"the {self._leg} service is down (test)")
        return await self._inner.book(booking_key, item_id, trip_id)

    async def cancel(self, booking_key: str) -> bool:
        if self._outages.cancel.get(self._leg, 0) > 0:
            self._outages.cancel[self._leg] -= 1
            raise TravelServiceUnavailable(f"the {self._leg} service cannot cancel now (test)")
        return await self._inner.cancel(booking_key)


@pytest.fixture
def outages() -> Outages:
    return Outages()


@pytest.fixture
def trips(settings: Settings, outages: Outages) -> Iterator[Store]:
    with Store.running(settings, travel=outages.wrap) as store:
        yield store


def trip_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": "traveller-7",
        "car_id": "compact-car",
        "hotel_id": "harbour-hotel",
        "flight_id": "LH-400",
        "attempts": 3,
    }
    body.update(changes)
    return body


def new_trip_key() -> str:
    return f"trip-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Leg:
    status: str
    book_calls: int
    cancel_calls: int
    confirmation: str | None


def services_hold(store: Store, trip_key: str) -> dict[str, Leg]:
    """What each travel service holds for the trip, read from the services' own table."""
    table = travel_bookings
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.booking_key.like(f"{trip_key}:%"))).all()
    return {
        row.kind: Leg(row.status, row.book_calls, row.cancel_calls, row.confirmation)
        for row in rows
    }


def workflow_status(workflow_id: str) -> str | None:
    status = DBOS.get_workflow_status(workflow_id)
    return status.status if status else None


def history(store: Store, trip_id: int) -> list[str]:
    response = store.http.get(f"/trips/{trip_id}")
    assert response.status_code == 200, response.text
    return [event["type"] for event in response.json()["events"]]


def legs_through(leg: str) -> list[str]:
    return list(TRIP_LEGS[: TRIP_LEGS.index(leg) + 1])  # type: ignore[arg-type]


def assert_rolled_back(store: Store, trip_key: str, reply: dict[str, Any], failed: str) -> None:
    """Every leg up to the failing one undone, newest first; nothing left booked."""
    tried = legs_through(failed)
    assert reply["status"] == "ROLLED_BACK"
    assert reply["cancelled"] == [UNDOS[leg] for leg in reversed(tried)]
    assert set(reply["bookings"]) == set(tried) - {failed}
    held = services_hold(store, trip_key)
    assert set(held) == set(tried), "no leg after the failing one was ever asked for"
    assert all(leg.status != "booked" for leg in held.values()), held
    assert all(leg.cancel_calls == 1 for leg in held.values()), held
    events = history(store, reply["trip_id"])
    undone = [e for e in events if e.startswith("Cancel")]
    assert undone == [f"Cancel{leg.title()}" for leg in reversed(tried)]
    assert events[-1] == "trip_rolled_back"


def assert_booked(store: Store, trip_key: str, reply: dict[str, Any]) -> None:
    assert reply["status"] == "BOOKED", reply
    assert reply["cancelled"] == []
    held = services_hold(store, trip_key)
    assert set(held) == set(TRIP_LEGS)
    assert all(leg.status == "booked" and leg.cancel_calls == 0 for leg in held.values())
    assert reply["bookings"] == {kind: leg.confirmation for kind, leg in held.items()}
    assert history(store, reply["trip_id"]) == [
        "RequestTrip_ok",
        "BookCar_ok",
        "BookHotel_ok",
        "BookFlight_ok",
        "trip_booked",
    ]


# --- the matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("leg", TRIP_LEGS)
def test_a_trip_whose_legs_all_succeed_is_booked(trips: Store, leg: str) -> None:
    key = new_trip_key()
    reply = trips.http.post(f"/trips/{key}", json=trip_body())

    assert reply.status_code == 200, reply.text
    assert_booked(trips, key, reply.json())
    assert services_hold(trips, key)[leg].book_calls == 1 + OWN_FAILURES[leg]


@pytest.mark.parametrize("leg", TRIP_LEGS)
def test_transient_failures_within_attempts_are_retried_until_booked(
    trips: Store, outages: Outages, leg: str
) -> None:
    key = new_trip_key()
    outages.book[leg] = 2
    attempts = 3 + OWN_FAILURES[leg]  # two failures (three for the hotel), then a booking

    reply = trips.http.post(f"/trips/{key}", json=trip_body(attempts=attempts))

    assert reply.status_code == 200, reply.text
    assert_booked(trips, key, reply.json())
    assert services_hold(trips, key)[leg].book_calls == 1 + OWN_FAILURES[leg]
    detail = next(
        e["detail"]
        for e in trips.http.get(f"/trips/{reply.json()['trip_id']}").json()["events"]
        if e["type"] == f"Book{leg.title()}_ok"
    )
    assert detail.endswith(f"(after {attempts} attempts)")


@pytest.mark.parametrize("leg", TRIP_LEGS)
def test_transient_failures_beyond_attempts_roll_back_every_leg_tried(
    trips: Store, outages: Outages, leg: str
) -> None:
    key = new_trip_key()
    outages.book[leg] = 3  # as many as the trip allows

    reply = trips.http.post(f"/trips/{key}", json=trip_body(attempts=3))

    assert reply.status_code == 200, reply.text
    assert_rolled_back(trips, key, reply.json(), failed=leg)
    assert reply.json()["reason"].startswith(f"the {leg} service failed 3 time(s)")
    # The outage answered every call before the service saw it: nothing was booked, and
    # the undo still ran, for a booking whose outcome was unknown.
    assert services_hold(trips, key)[leg].book_calls == 0


@pytest.mark.parametrize("leg", TRIP_LEGS)
def test_an_invalid_item_is_refused_at_once_and_rolls_everything_back(
    trips: Store, leg: str
) -> None:
    key = new_trip_key()

    reply = trips.http.post(f"/trips/{key}", json=trip_body(**{f"{leg}_id": "invalid-x"}))

    assert reply.status_code == 200, reply.text
    assert_rolled_back(trips, key, reply.json(), failed=leg)
    assert reply.json()["reason"].startswith(f"the {leg} was refused")
    refused = services_hold(trips, key)[leg]
    assert (refused.status, refused.book_calls) == ("rejected", 1 + OWN_FAILURES[leg]), (
        "a refusal is not retried, although attempts were left"
    )


@pytest.mark.parametrize("leg", TRIP_LEGS)
def test_a_crash_right_after_a_legs_step_resumes_without_booking_anything_twice(
    settings: Settings, outages: Outages, leg: str
) -> None:
    key = new_trip_key()
    with Store.running(settings, travel=outages.wrap) as store:
        faults.arm_crash_after(f"book_{leg}")
        cut_short = store.http.post(f"/trips/{key}", json=trip_body())
        if leg == TRIP_LEGS[-1]:  # its step ended the trip: only the completion was lost
            assert cut_short.json()["status"] == "BOOKED", cut_short.text
        else:
            assert cut_short.status_code == 503, cut_short.text
            assert "retry with the same key" in cut_short.json()["detail"]
        assert set(services_hold(store, key)) == set(legs_through(leg))
        assert workflow_status(key) == "PENDING"
    faults.disarm()

    with Store.running(settings, travel=outages.wrap) as store:  # recovers the workflow
        reply = store.http.post(f"/trips/{key}", json=trip_body())
        assert reply.status_code == 200, reply.text
        assert_booked(store, key, reply.json())
        eventually(lambda: workflow_status(key), lambda s: s == "SUCCESS", what="completion")
        held = services_hold(store, key)
        assert {k: v.book_calls for k, v in held.items()} == {
            k: 1 + OWN_FAILURES[k] for k in TRIP_LEGS
        }, "the step that completed before the crash was not run again"


@pytest.mark.parametrize("undo", TRIP_CRASH_POINTS[3:])
def test_a_crash_right_after_an_undo_resumes_the_rollback_where_it_stopped(
    settings: Settings, outages: Outages, undo: Checkpoint
) -> None:
    key = new_trip_key()
    body = trip_body(flight_id="invalid-flight")
    with Store.running(settings, travel=outages.wrap) as store:
        faults.arm_crash_after(undo.value)
        cut_short = store.http.post(f"/trips/{key}", json=body)
        if undo == TRIP_CRASH_POINTS[-1]:  # the last undo ends the trip with it
            assert cut_short.json()["status"] == "ROLLED_BACK", cut_short.text
        else:
            assert cut_short.status_code == 503, cut_short.text
        assert workflow_status(key) == "PENDING"
    faults.disarm()

    with Store.running(settings, travel=outages.wrap) as store:
        reply = store.http.post(f"/trips/{key}", json=body)
        assert reply.status_code == 200, reply.text
        assert_rolled_back(store, key, reply.json(), failed="flight")
        eventually(lambda: workflow_status(key), lambda s: s == "SUCCESS", what="completion")


def test_a_failing_undo_is_retried_parked_and_then_resolved(
    settings: Settings, outages: Outages
) -> None:
    key = new_trip_key()
    outages.cancel["hotel"] = 4  # parked after failures 2 and 4, retried by itself each time
    quick = replace(settings, compensation_attempts=2, dead_letter_retry_s=0.2)
    with Store.running(quick, travel=outages.wrap) as store:
        reply = store.http.post(f"/trips/{key}", json=trip_body(flight_id="invalid-flight"))

        assert reply.status_code == 200, reply.text
        assert_rolled_back(store, key, reply.json(), failed="flight")
        events = history(store, reply.json()["trip_id"])
        assert events.count("Compensation_parked") == 2  # after failures 2 and 4
        assert events.index("Compensation_parked") > events.index("CancelFlight")
        assert events.index("CancelHotel") < events.index("CancelCar")
        letters = store.rows("SELECT trip_id, order_id, compensation, status FROM dead_letters")
        assert letters == [
            {
                "trip_id": reply.json()["trip_id"],
                "order_id": None,
                "compensation": "cancel_hotel",
                "status": "resolved",
            }
        ]


@pytest.mark.parametrize("slow", ["car", "flight"])
def test_a_used_key_with_another_body_is_refused_while_the_first_trip_still_runs(
    trips: Store, outages: Outages, slow: str
) -> None:
    key = new_trip_key()
    release = outages.held[slow] = threading.Event()
    first: list[Any] = []
    booking = threading.Thread(
        target=lambda: first.append(trips.http.post(f"/trips/{key}", json=trip_body()))
    )
    booking.start()
    try:
        assert outages.reached.wait(10), "the first trip never reached its slow service"

        other = trips.http.post(f"/trips/{key}", json=trip_body(hotel_id="other-hotel"))

        assert other.status_code == 409, other.text
        assert "different trip" in other.json()["detail"]
        assert booking.is_alive()  # answered while the first trip still waits on its service
    finally:
        release.set()
        booking.join(30)
    assert first[0].status_code == 200, first[0].text
    assert_booked(trips, key, first[0].json())
