"""The trip saga on the store and on Temporal, side by side, in one run (issue 12).

Both book the same trips (car, then hotel, then flight; the hotel down on each trip's first
try) against the same simulated travel services, each on its own private PostgreSQL. Each
load runs as turns taken in alternation, store then Temporal, round after round, and the
report gives the median of the rounds, because this machine's speed drifts by tens of
percent within minutes.

Per system: sequential latency (p50, p99), throughput with 8 and 32 trips at once, CPU per
trip of the processes that run the saga (the store's server; Temporal's dev server and
worker), the same for PostgreSQL and for this client apart, the time for trips in flight to
finish after the worker is killed with kill -9 (and restarted), and what the services
counted: duplicate side effects, repeated calls, and trips whose bookings disagree with the
outcome the system reported.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.dbos_floor import measured_apart
from bench.load import percentile
from bench.report import RESULTS, save_json, target
from bench.temporal_trip.shared import TripPolicy
from bench.trip_load import (
    BOOKED,
    ROLLED_BACK,
    Ledger,
    TripSystem,
    closed_loop,
    through_a_kill,
    trip_order,
)

SEQUENTIAL = 1
FLOOR_TRIPS = 20


@dataclass(frozen=True)
class TripBench:
    """What one run measures."""

    rounds: int = 3
    seconds: float = 8.0
    levels: tuple[int, ...] = (8, 32)
    kill_trips: int = 32
    warmup_s: float = 2.0
    only: str | None = None  # "store" or "temporal"
    store_workers: int = 1
    retry_initial_s: float = 0.01
    activity_timeout_s: float = 10.0
    task_timeout_s: float = 10.0
    sticky_timeout_s: float = 10.0
    temporal_in_memory: bool = False
    temporal_timer_shift_ms: float | None = 10.0
    temporal_unsandboxed: bool = False
    results: Path = RESULTS
    name: str = "trips"
    engine_floor_trips: int = 30  # DBOS alone running empty trips, for the floor (0: skip)

    @classmethod
    def smoke(cls, results: Path, only: str | None = None) -> TripBench:
        """Seconds, not minutes: one short round, Temporal's timeouts cut so its recovery
        after the kill takes about 2 s instead of 10 s. Proves the benchmark still runs."""
        return cls(
            rounds=1,
            seconds=1.0,
            kill_trips=8,
            warmup_s=0.5,
            only=only,
            activity_timeout_s=2.0,
            task_timeout_s=2.0,
            sticky_timeout_s=1.0,
            results=results,
            name="trips-smoke",
            engine_floor_trips=3,
        )


@dataclass
class Side:
    """One system's part of the run."""

    name: str
    system: TripSystem | None = None
    skipped: str | None = None
    ledger: Ledger = field(default_factory=Ledger)
    checks: list[str] = field(default_factory=list)  # the checks that failed
    turns: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    kills: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    floor_p50_ms: list[float] = field(default_factory=list)  # the services alone, per round
    engine_floor_p50_ms: float | None = None  # DBOS alone, the trip's operations empty

    def median(self, level: int, key: str) -> float | None:
        """The median over the rounds of one figure of one load."""
        values = [turn[key] for turn in self.turns.get(level, []) if turn[key] is not None]
        return statistics.median(values) if values else None

    def kill_median(self, key: str) -> float | None:
        """The median over the rounds of one figure of the kill."""
        values = [kill[key] for kill in self.kills if kill[key] is not None]
        return statistics.median(values) if values else None


def _systems(bench: TripBench) -> list[Side]:
    from bench.temporal_trip import server

    sides = []
    if bench.only in (None, "store"):
        from bench.trip_store import StoreTrips

        sides.append(Side("store", StoreTrips(bench.store_workers)))
    if bench.only in (None, "temporal"):
        reason = server.missing()
        if reason:
            sides.append(Side("temporal", skipped=reason))
        else:
            from bench.temporal_trip.system import TemporalOptions, TemporalTrips

            options = TemporalOptions(
                policy=TripPolicy(
                    retry_initial_s=bench.retry_initial_s,
                    activity_timeout_s=bench.activity_timeout_s,
                    task_timeout_s=bench.task_timeout_s,
                ),
                sticky_timeout_s=bench.sticky_timeout_s,
                in_memory=bench.temporal_in_memory,
                timer_shift_ms=bench.temporal_timer_shift_ms,
                unsandboxed=bench.temporal_unsandboxed,
            )
            print(f"Temporal: {options.describe()}", flush=True)
            sides.append(Side("temporal", TemporalTrips(options)))
    return sides


async def _check(side: Side) -> None:
    """The saga's behaviour, once per system before measuring: booked, rolled back by an
    invalid item (every undo, the failing leg's included), rolled back by the hotel's
    failure with too few attempts, and the same key giving the same trip."""
    system = side.system
    assert system is not None
    cases = [
        (trip_order("check"), BOOKED, 0),
        (trip_order("check", flight_id="invalid-flight"), ROLLED_BACK, 3),
        (trip_order("check", attempts=1), ROLLED_BACK, 2),
    ]
    for order, status, undos in cases:
        outcome = await system.book(order)
        side.ledger.record(outcome)
        if outcome.status != status or len(outcome.cancelled) != undos:
            side.checks.append(f"{order.body()} gave {outcome}, wanted {status}, {undos} undos")
        if status == BOOKED and sorted(outcome.bookings) != ["car", "flight", "hotel"]:
            side.checks.append(f"a booked trip confirmed {outcome.bookings}")
        again = await system.book(order)
        if (again.trip_id, again.status) != (outcome.trip_id, outcome.status):
            side.checks.append(f"the same key gave another trip: {again} after {outcome}")
    print(f"  {side.name}: checks {'passed' if not side.checks else 'FAILED'}", flush=True)


async def _count(side: Side) -> None:
    """The services' account, against the outcomes the system reported."""
    assert side.system is not None
    counts = await side.system.counts()

    def agrees(trip_id: str, status: str) -> bool:
        trip = counts.trips.get(trip_id)
        if trip is None:
            return False
        return trip.fully_booked if status == BOOKED else trip.nothing_live

    disagreeing = sum(not agrees(*item) for item in side.ledger.statuses.items())
    side.counts = {
        "trips_answered": len(side.ledger.statuses),
        "trips_seen_by_services": len(counts.trips),
        "bookings": counts.bookings,
        "duplicates": counts.duplicates,
        "book_calls": counts.book_calls,
        "cancel_calls": counts.cancel_calls,
        "repeated_calls": counts.repeated_calls,
        "disagreeing_trips": disagreeing,
        "errors": len(side.ledger.errors),
    }


def _turn_line(side: Side, level: int, turn: dict[str, Any]) -> str:
    cpu = turn["cpu_ms_per_trip"]
    return (
        f"  {side.name:<8} {level:>2} at once: {turn['trips']:>5} trips, "
        f"{turn['trips_per_s']:6.1f}/s, p50 {turn['p50_ms'] or 0:7.1f} ms, "
        f"p99 {turn['p99_ms'] or 0:7.1f} ms, CPU {cpu or 0:6.1f} ms/trip, "
        f"errors {turn['errors']}"
    )


async def measure(bench: TripBench) -> list[Side]:
    """Start the systems, check them, run the interleaved rounds, count, stop."""
    sides = _systems(bench)
    # Ended from outside (a timeout, say), still stop what was started: clusters, the dev
    # server and workers would otherwise outlive the run on a shared machine.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    try:
        store = next((side for side in sides if side.name == "store" and side.system), None)
        if store is not None and bench.engine_floor_trips:  # before anything else runs
            floor = await asyncio.to_thread(measured_apart, bench.engine_floor_trips)
            store.engine_floor_p50_ms = floor["trip_p50_ms"]
            print(f"DBOS alone, a trip's operations empty: p50 {floor['trip_p50_ms']:.1f} ms")
        for side in sides:
            if side.system is None:
                continue
            print(f"starting {side.name} ...", flush=True)
            try:
                await side.system.start()
            except NotImplementedError as missing:
                side.skipped, side.system = f"not built yet: {missing}", None
        running = [side for side in sides if side.system is not None]
        for side in running:
            await _check(side)
            assert side.system is not None
            await closed_loop(side.system, 4, bench.warmup_s, side.ledger)
        for round_number in range(1, bench.rounds + 1):
            print(f"round {round_number} of {bench.rounds}", flush=True)
            for side in running:
                alone = getattr(side.system, "services_alone", None)
                if alone is not None:
                    side.floor_p50_ms.append(percentile(await alone(FLOOR_TRIPS), 0.5) or 0.0)
                    print(
                        f"  {side.name:<8} the services alone: p50 {side.floor_p50_ms[-1]:.1f} ms",
                        flush=True,
                    )
            for level in (SEQUENTIAL, *bench.levels):
                for side in running:  # A, B, A, B: the machine's drift hits both alike
                    assert side.system is not None
                    load = await closed_loop(side.system, level, bench.seconds, side.ledger)
                    turn = load.summary()
                    side.turns.setdefault(level, []).append(turn)
                    print(_turn_line(side, level, turn), flush=True)
            for side in running:
                assert side.system is not None
                kill = (await through_a_kill(side.system, bench.kill_trips, side.ledger)).summary()
                side.kills.append(kill)
                print(
                    f"  {side.name:<8} kill -9 with {kill['in_flight']} in flight: serving "
                    f"again after {kill['restarted_s'] or 0:.2f} s, all done after "
                    f"{kill['finished_s'] or 0:.2f} s",
                    flush=True,
                )
        for side in running:
            await _count(side)
    finally:
        for side in sides:
            if side.system is not None:
                await side.system.stop()
    return sides


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(sides: list[Side], bench: TripBench) -> str:
    """The side-by-side table of medians."""
    top = max(bench.levels)
    rows: list[tuple[str, list[str]]] = [
        ("sequential p50 (ms)", [_fmt(s.median(SEQUENTIAL, "p50_ms")) for s in sides]),
        (
            "  the services alone, no engine (ms)",
            [_fmt(statistics.median(s.floor_p50_ms)) if s.floor_p50_ms else "-" for s in sides],
        ),
        (
            "  DBOS alone, the 5 operations empty (ms)",
            [_fmt(s.engine_floor_p50_ms) for s in sides],
        ),
        ("sequential p99 (ms)", [_fmt(s.median(SEQUENTIAL, "p99_ms")) for s in sides]),
    ]
    for level in bench.levels:
        rows.append(
            (
                f"throughput, {level} at once (trips/s)",
                [_fmt(s.median(level, "trips_per_s")) for s in sides],
            )
        )
    rows.append((f"p50 with {top} at once (ms)", [_fmt(s.median(top, "p50_ms")) for s in sides]))
    for level in (SEQUENTIAL, *bench.levels):
        rows.append(
            (
                f"CPU per trip, {level} at once (ms)",
                [_fmt(s.median(level, "cpu_ms_per_trip")) for s in sides],
            )
        )
    rows += [
        (
            f"  PostgreSQL's, {top} at once (ms, apart)",
            [_fmt(s.median(top, "database_cpu_ms_per_trip")) for s in sides],
        ),
        (
            f"  this client's, {top} at once (ms, apart)",
            [_fmt(s.median(top, "client_cpu_ms_per_trip")) for s in sides],
        ),
        ("kill -9: trips in flight", [_fmt(s.kill_median("in_flight"), 0) for s in sides]),
        (
            "kill -9: serving again after (s)",
            [_fmt(s.kill_median("restarted_s"), 2) for s in sides],
        ),
        (
            "kill -9: in-flight done after (s)",
            [_fmt(s.kill_median("finished_s"), 2) for s in sides],
        ),
        (
            "kill -9: done after the restart (s)",
            [_fmt(s.kill_median("after_restart_s"), 2) for s in sides],
        ),
    ]
    for key, label in [
        ("trips_answered", "trips answered in the run"),
        ("duplicates", "duplicate side effects"),
        ("repeated_calls", "repeated calls (harmless, by key)"),
        ("disagreeing_trips", "trips whose bookings disagree"),
        ("errors", "trips that failed"),
    ]:
        rows.append((label, [str(s.counts.get(key, "-")) for s in sides]))
    width = max(len(label) for label, _ in rows)
    header = f"{'':<{width}}  " + "  ".join(f"{s.name:>12}" for s in sides)
    lines = [header]
    lines += [
        f"{label:<{width}}  " + "  ".join(f"{v:>12}" for v in values) for label, values in rows
    ]
    for side in sides:
        if side.skipped:
            lines.append(f"{side.name}: skipped, {side.skipped}")
    return "\n".join(lines)


def targets(sides: list[Side], bench: TripBench) -> str:
    """Issue 12's targets for the store, against Temporal in the same run."""
    by = {side.name: side for side in sides}
    store, temporal = by.get("store"), by.get("temporal")
    if not store or not temporal or store.skipped or temporal.skipped:
        return "Targets: need both systems measured in the same run."
    top = max(bench.levels)

    def ratio(value: float | None, base: float | None) -> float | None:
        return None if value is None or not base else value / base

    lines = ["Targets (store against Temporal, this run):"]
    lines.append(
        target(
            "sequential p50 as a share of Temporal's",
            ratio(store.median(SEQUENTIAL, "p50_ms"), temporal.median(SEQUENTIAL, "p50_ms")),
            0.1,
            at_most=True,
            unit="x",
        )
    )
    if store.floor_p50_ms and store.engine_floor_p50_ms is not None:
        services = statistics.median(store.floor_p50_ms)
        floor = services + store.engine_floor_p50_ms
        base = temporal.median(SEQUENTIAL, "p50_ms")
        lines.append(
            f"  under the store's p50, measured apart: the services alone {services:.1f} ms + "
            f"DBOS alone {store.engine_floor_p50_ms:.1f} ms = {floor:.1f} ms"
            + ("" if not base else f" = {floor / base:.2f}x Temporal's p50 (target 0.1x)")
        )
    lines.append(
        target(
            f"throughput with {top} at once, times Temporal's",
            ratio(store.median(top, "trips_per_s"), temporal.median(top, "trips_per_s")),
            3,
            at_most=False,
            unit="x",
        )
    )
    lines.append(
        target(
            "in-flight trips done after the restart",
            store.kill_median("after_restart_s"),
            2,
            at_most=True,
            unit="s",
        )
    )
    lines.append(
        target("duplicate side effects", store.counts.get("duplicates"), 0, at_most=True, unit="")
    )
    return "\n".join(lines)


def run(bench: TripBench) -> int:
    """Measure, print the table and the targets, save the JSON; 1 if a check failed."""
    sides = asyncio.run(measure(bench))
    print(f"\nTrip saga, median of {bench.rounds} interleaved round(s), {bench.seconds:g} s a turn")
    print(table(sides, bench))
    print(targets(sides, bench))
    failed = False
    for side in sides:
        for problem in side.checks + side.ledger.errors[:5]:
            print(f"  {side.name}: {problem}")
        failed |= bool(side.checks) or bool(side.counts.get("disagreeing_trips"))
    path = save_json(
        bench.name,
        {
            "bench": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(bench).items()},
            "systems": {
                side.name: {
                    "skipped": side.skipped,
                    "checks_failed": side.checks,
                    "turns": {str(level): turns for level, turns in side.turns.items()},
                    "kills": side.kills,
                    "counts": side.counts,
                    "services_alone_p50_ms": side.floor_p50_ms,
                    "engine_alone_p50_ms": side.engine_floor_p50_ms,
                    "errors": side.ledger.errors[:20],
                }
                for side in sides
            },
        },
        bench.results,
    )
    print(f"saved {path}")
    return 1 if failed else 0
