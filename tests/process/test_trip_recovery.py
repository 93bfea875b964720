"""Kill -9 the real server with trips in flight: after the restart every trip finishes, as
it would have, and no travel service booked anything twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.server import ServerProcess, running_server
from widget_store.config import Database
from widget_store.simulated.travel import read_travel_counts

TRIPS = 16
INVALID_EVERY = 4  # every fourth trip has an invalid flight: it must end rolled back
CRASH_AFTER_HOTELS = 4  # the worker dies right after the fifth hotel is checkpointed


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "WIDGET_STORE_DATABASE_URL": database_url,
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "WIDGET_STORE_FAULT_INJECTION": "1",
    }
    with running_server(env, tmp_path / "server.log") as running:
        yield running


def body(n: int) -> dict[str, Any]:
    flight = "invalid-flight" if n % INVALID_EVERY == 0 else "LH-400"
    return {
        "user_id": f"traveller-{n}",
        "car_id": "compact-car",
        "hotel_id": "harbour-hotel",
        "flight_id": flight,
        "attempts": 3,
    }


def book(base_url: str, key: str, trip: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """POST the trip until it has an outcome, through the crash, as a client would; returns
    the outcome and how many answers were not it (a cut connection, a 503)."""
    interrupted = 0
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                response = http.post(f"/trips/{key}", json=trip)
            except httpx.TransportError:
                interrupted += 1
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                return response.json(), interrupted
            assert response.status_code == 503, response.text
            interrupted += 1
            time.sleep(0.05)
    raise AssertionError(f"trip {key} had no outcome within 60 s")


def test_trips_in_flight_through_kill_9_all_finish_without_duplicates(
    server: ServerProcess, database_url: str
) -> None:
    worker = server.worker_pid()
    armed = server.http.post(f"/_faults/crash-after/book_hotel?skip={CRASH_AFTER_HOTELS}")
    assert armed.status_code == 200, armed.text
    keys = [f"trip-{uuid.uuid4().hex}" for _ in range(TRIPS)]

    with ThreadPoolExecutor(TRIPS) as pool:
        results = list(pool.map(lambda n: book(server.base_url, keys[n], body(n)), range(TRIPS)))

    assert server.worker_pid() != worker, "the armed crash killed the worker"
    assert sum(interrupted for _, interrupted in results) > 0, "some trip was in flight"
    for n, (outcome, _) in enumerate(results):
        wanted = "ROLLED_BACK" if n % INVALID_EVERY == 0 else "BOOKED"
        assert outcome["status"] == wanted, (n, outcome)
        if wanted == "ROLLED_BACK":
            assert outcome["cancelled"] == ["cancel_flight", "cancel_hotel", "cancel_car"]

    engine = create_async_engine(Database.parse(database_url).async_url)
    counts = asyncio.run(_counts(engine, [str(outcome["trip_id"]) for outcome, _ in results]))
    assert counts.duplicates == 0
    for outcome, _ in results:
        trip = counts.trips[str(outcome["trip_id"])]
        if outcome["status"] == "BOOKED":
            assert trip.fully_booked, trip
        else:
            assert trip.nothing_live, trip
    sync = sa.create_engine(Database.parse(database_url).sync_url)
    with sync.connect() as conn:
        events = conn.execute(
            sa.text("SELECT trip_id, type, count(*) AS n FROM trip_events GROUP BY trip_id, type")
        ).all()
    sync.dispose()
    assert all(row.n == 1 for row in events), "each step and undo logged once per trip"


async def _counts(engine: Any, trip_ids: list[str]) -> Any:
    try:
        return await read_travel_counts(engine, trip_ids)
    finally:
        await engine.dispose()
