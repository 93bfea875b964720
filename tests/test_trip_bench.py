"""The trip benchmark's harness: its loads, its kill timing and its report, on a fake system
that runs the saga in this process; then its smoke run on Temporal for real."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.temporal_trip import server as temporal_server
from bench.trip_load import (
    BOOKED,
    ROLLED_BACK,
    Ledger,
    TripOrder,
    TripOutcome,
    closed_loop,
    through_a_kill,
)
from bench.trips import Side, TripBench, _systems, table, targets
from widget_store.config import PROJECT_ROOT, Database
from widget_store.simulated.travel import (
    TRIP_LEGS,
    TravelCounts,
    TravelServiceUnavailable,
    create_travel_tables,
    read_travel_counts,
    travel_services,
)


class FakeTrips:
    """The saga in this process, on the real services; its 'worker' is a gate that a kill
    closes for a moment, holding every trip at its next step."""

    name = "fake"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.services = travel_services(engine)
        self.alive = asyncio.Event()
        self.alive.set()
        self.kills = 0

    async def start(self) -> None:
        await create_travel_tables(self.engine)

    async def stop(self) -> None:
        await self.engine.dispose()

    async def book(self, order: TripOrder) -> TripOutcome:
        items = {"car": order.car_id, "hotel": order.hotel_id, "flight": order.flight_id}
        bookings: dict[str, str] = {}
        for leg in TRIP_LEGS:
            for attempt in range(1, order.attempts + 1):
                await self.alive.wait()
                try:
                    bookings[leg] = await self.services[leg].book(
                        f"{order.key}:{leg}", items[leg], order.key
                    )
                    break
                except TravelServiceUnavailable:
                    if attempt == order.attempts:
                        return await self._roll_back(order, bookings, leg)
        return TripOutcome(order.key, BOOKED, bookings, [])

    async def _roll_back(
        self, order: TripOrder, bookings: dict[str, str], failed: str
    ) -> TripOutcome:
        legs = TRIP_LEGS[: TRIP_LEGS.index(failed) + 1]  # type: ignore[arg-type]
        for leg in reversed(legs):
            await self.services[leg].cancel(f"{order.key}:{leg}")
        return TripOutcome(
            order.key, ROLLED_BACK, bookings, [f"cancel_{leg}" for leg in reversed(legs)]
        )

    def pids(self) -> list[int]:
        return [os.getpid()]

    def database_pids(self) -> list[int]:
        return []

    async def kill_worker(self) -> None:
        self.kills += 1
        self.alive.clear()
        await asyncio.sleep(0.2)  # the restart
        self.alive.set()

    async def counts(self, trip_ids: list[str] | None = None) -> TravelCounts:
        return await read_travel_counts(self.engine, trip_ids)


def with_fake(tmp_path: Path, scenario: Callable[[FakeTrips], Awaitable[None]]) -> None:
    async def main() -> None:
        url = Database.parse(f"sqlite:///{tmp_path / 'travel.sqlite'}").async_url
        fake = FakeTrips(create_async_engine(url))
        await fake.start()
        try:
            await scenario(fake)
        finally:
            await fake.stop()

    asyncio.run(main())


def test_a_closed_loop_counts_every_trip_and_its_latency(tmp_path: Path) -> None:
    async def scenario(fake: FakeTrips) -> None:
        ledger = Ledger()
        load = await closed_loop(fake, 4, 0.3, ledger)

        assert load.trips > 4
        assert len(load.latencies_ms) == load.trips == len(ledger.statuses)
        assert load.errors == load.unexpected == 0
        summary = load.summary()
        assert summary["trips_per_s"] > 0
        assert summary["p50_ms"] <= summary["p99_ms"]
        assert summary["cpu_ms_per_trip"] is not None

    with_fake(tmp_path, scenario)


def test_trips_in_flight_through_a_kill_are_timed_from_the_kill(tmp_path: Path) -> None:
    async def scenario(fake: FakeTrips) -> None:
        ledger = Ledger()
        kill = await through_a_kill(fake, 8, ledger)

        assert fake.kills == 1
        assert kill.in_flight > 0
        assert kill.restarted_s is not None and kill.restarted_s >= 0.2
        assert kill.finished_s is not None and kill.finished_s >= kill.restarted_s
        assert kill.errors == kill.unexpected == 0
        counts = await fake.counts()
        assert len(counts.trips) == 8
        assert all(trip.fully_booked for trip in counts.trips.values())

    with_fake(tmp_path, scenario)


def measured(name: str, p50: float, rate: float, after_restart: float, dups: int) -> Side:
    side = Side(name)
    turn = {"p50_ms": p50, "p99_ms": p50 * 2, "trips_per_s": rate, "cpu_ms_per_trip": 1.0}
    for level in (1, 8, 32):
        side.turns[level] = [
            {**turn, "database_cpu_ms_per_trip": None, "client_cpu_ms_per_trip": None}
        ]
    side.kills = [
        {
            "in_flight": 30,
            "restarted_s": 1.0,
            "finished_s": 1.0 + after_restart,
            "after_restart_s": after_restart,
        }
    ]
    side.counts = {
        "trips_answered": 100,
        "duplicates": dups,
        "repeated_calls": 0,
        "disagreeing_trips": 0,
        "errors": 0,
    }
    return side


def test_the_targets_compare_the_store_with_temporal_in_the_same_run() -> None:
    sides = [measured("store", 15.0, 100.0, 1.5, 0), measured("temporal", 200.0, 25.0, 10.0, 0)]

    report = targets(sides, TripBench())

    lines = report.splitlines()
    assert "0.1x" in lines[1] and lines[1].endswith("met")  # 15/200 = 0.075
    assert "4.0x" in lines[2] and lines[2].endswith("met")
    assert lines[3].endswith("met") and lines[4].endswith("met")
    slow = targets([measured("store", 50.0, 50.0, 3.0, 1), sides[1]], TripBench())
    assert slow.count("NOT MET") == 4


def test_a_system_that_cannot_run_is_reported_with_its_reason() -> None:
    sides = [
        Side("store", skipped="not built yet: no POST /trips"),
        measured("temporal", 200, 25, 10, 0),
    ]

    report = table(sides, TripBench())

    assert "store: skipped, not built yet: no POST /trips" in report
    assert "sequential p50 (ms)" in report.splitlines()[1]
    assert "need both systems" in targets(sides, TripBench())


@pytest.mark.postgres
@pytest.mark.process
@pytest.mark.usefixtures("postgres_server_binaries")
def test_the_smoke_run_measures_temporal_end_to_end(tmp_path: Path) -> None:
    if temporal_server.missing():
        pytest.skip(str(temporal_server.missing()))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "trips",
            "--smoke",
            "--only",
            "temporal",
            "--results",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    temporal = json.loads((tmp_path / "trips-smoke.json").read_text())["systems"]["temporal"]
    assert temporal["skipped"] is None and temporal["checks_failed"] == []
    assert [level for level in temporal["turns"]] == ["1", "8", "32"]
    assert all(
        turn["trips"] > 0 and turn["errors"] == 0
        for turns in temporal["turns"].values()
        for turn in turns
    )
    (kill,) = temporal["kills"]
    assert kill["in_flight"] > 0 and kill["finished_s"] is not None
    assert temporal["counts"]["duplicates"] == 0
    assert temporal["counts"]["disagreeing_trips"] == 0
    assert "duplicate side effects" in result.stdout


def test_temporal_is_skipped_with_the_reason_where_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(temporal_server, "temporal_binary", lambda: None)

    (side,) = _systems(TripBench(only="temporal"))

    assert side.system is None
    assert side.skipped is not None and "temporal dev server is not installed" in side.skipped
