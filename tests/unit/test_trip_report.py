"""The trip benchmark's report: the side-by-side table, issue 12's targets, and a system
that cannot run shown with its reason."""

from __future__ import annotations

import pytest

from bench.temporal_trip import server as temporal_server
from bench.trips import Side, TripBench, _systems, table, targets


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
    assert "0.07x" in lines[1] and lines[1].endswith("met")  # 15/200 = 0.075
    assert "4.00x" in lines[2] and lines[2].endswith("met")
    assert lines[3].endswith("met") and lines[4].endswith("met")
    slow = targets([measured("store", 50.0, 50.0, 3.0, 1), sides[1]], TripBench())
    assert slow.count("NOT MET") == 4


def test_a_ratio_just_short_of_its_target_is_not_shown_as_the_target() -> None:
    sides = [measured("store", 15.0, 73.1, 1.5, 0), measured("temporal", 200.0, 24.6, 10.0, 0)]

    (throughput,) = [line for line in targets(sides, TripBench()).splitlines() if "times" in line]

    assert "2.97x" in throughput and throughput.endswith("NOT MET")
    (duplicates,) = [
        line for line in targets(sides, TripBench()).splitlines() if "duplicate" in line
    ]
    assert duplicates.split()[3] == "0"  # a count, shown as one


def test_a_system_that_cannot_run_is_reported_with_its_reason() -> None:
    sides = [
        Side("store", skipped="not built yet: no POST /trips"),
        measured("temporal", 200, 25, 10, 0),
    ]

    report = table(sides, TripBench())

    assert "store: skipped, not built yet: no POST /trips" in report
    assert "sequential p50 (ms)" in report.splitlines()[1]
    assert "need both systems" in targets(sides, TripBench())


def test_temporal_is_skipped_with_the_reason_where_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(temporal_server, "temporal_binary", lambda: None)

    (side,) = _systems(TripBench(only="temporal"))

    assert side.system is None
    assert side.skipped is not None and "temporal dev server is not installed" in side.skipped
