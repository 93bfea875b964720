"""DBOS's own floor: what one durable step costs in CPU and commits, with no store around it.

A workflow of empty steps measures what the engine itself spends per checkpoint, so the
store's figures can be read against it: a purchase cannot cost less than its number of
durable steps times this floor.

A purchase-shaped workflow measures the floor of a purchase itself: the durable
operations a paid checkout makes (README, "What a purchase costs in durable
operations"), each with nothing inside: the start, a step (place_order), recv with a
deadline woken by a send from outside the workflow (the webhook), two steps (ship_order,
complete_dispatch) and the completion. No store can buy with these operations for less
CPU than this, nor answer a checkout call (start to the first step's work done) sooner.
A trip-shaped one (the start, three steps, the completion) is the floor under a trip.

The lever the store has not pulled is measured too: a step whose body runs a
transaction of place_order's size (seven statements), once as the store writes its
steps (an async body on the async engine, asyncpg) and once as a synchronous body on a
synchronous engine (psycopg) through `DBOS.run_step_async`, which runs DBOS's check, the
body and DBOS's record in one worker thread instead of three hops. The two run in
turns, so the difference is measured side by side.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig, SetWorkflowID
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.metrics import PostgresCounters

STEPS_PER_WORKFLOW = 10
_datasource: AsyncSQLAlchemyDatasource | None = None


@DBOS.step(name="bench_empty_step")
async def empty_step(i: int) -> int:
    return i


async def _empty_transaction(i: int) -> int:
    assert _datasource is not None
    await _datasource.sql_session().execute(sa.text("SELECT 1"))
    return i


_first_step_done: dict[str, asyncio.Event] = {}


@DBOS.step(name="bench_purchase_step")
async def purchase_step(i: int) -> int:
    """Empty, but it tells the caller the first one ran, as place_order announces it."""
    done = _first_step_done.get(DBOS.workflow_id or "")
    if done is not None:
        done.set()
    return i


@DBOS.workflow(name="bench_purchase")
async def purchase_workflow() -> None:
    await purchase_step(0)  # place_order
    await DBOS.recv_async("payment", timeout_seconds=30)  # the webhook's verdict
    await purchase_step(1)  # ship_order
    await purchase_step(2)  # complete_dispatch


@DBOS.workflow(name="bench_trip")
async def trip_workflow() -> None:
    for i in range(3):  # book_car, book_hotel, book_flight
        await empty_step(i)


@DBOS.workflow(name="bench_steps")
async def steps_workflow(kind: str) -> None:
    for i in range(STEPS_PER_WORKFLOW):
        if kind == "step":
            await empty_step(i)
        else:
            assert _datasource is not None
            options: Any = {"name": "bench_tx", "isolation_level": "READ COMMITTED"}
            await _datasource.run_tx_step_async(options, _empty_transaction, i)


# --- the lever: a step with SQL in it, async on asyncpg or sync on psycopg ---------------

LEVER_STATEMENTS = 7  # place_order's first transaction, for a one-line cart
LEVER_ROUNDS = 6
LEVER_UPDATE = sa.text("UPDATE bench_lever SET v = v + 1 WHERE id = :id")
_lever_engines: tuple[AsyncEngine, sa.Engine] | None = None


async def _async_sql_body() -> None:
    assert _lever_engines is not None
    async with _lever_engines[0].begin() as conn:
        for i in range(LEVER_STATEMENTS):
            await conn.execute(LEVER_UPDATE, {"id": i + 1})


def _sync_sql_body() -> None:
    assert _lever_engines is not None
    with _lever_engines[1].begin() as conn:
        for i in range(LEVER_STATEMENTS):
            conn.execute(LEVER_UPDATE, {"id": i + 1})


@DBOS.workflow(name="bench_lever")
async def lever_workflow(kind: str) -> None:
    for _ in range(STEPS_PER_WORKFLOW):
        if kind == "async":
            await DBOS.run_step_async({"name": "bench_sql_async"}, _async_sql_body)
        else:
            await DBOS.run_step_async({"name": "bench_sql_sync"}, _sync_sql_body)


@dataclass(frozen=True)
class SyncStepLever:
    """A step running a seven-statement transaction: async body vs sync body, in turns."""

    kind: str
    statements: int
    async_cpu_ms: float  # per step, medians of the rounds
    sync_cpu_ms: float
    async_wall_ms: float
    sync_wall_ms: float
    rounds: int


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


async def _per_step(
    workflow: Callable[[str], Coroutine[Any, Any, None]], kind: str, workflows: int
) -> tuple[float, float]:
    """Run `workflows` of `workflow(kind)` (ten steps each) one after another: the CPU
    and wall time per step, in ms."""
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(workflows):
        with SetWorkflowID(f"bench-{kind}-{n}-{time.time_ns()}"):
            handle = await DBOS.start_workflow_async(workflow, kind)
        await handle.get_result()
    steps = workflows * STEPS_PER_WORKFLOW
    return (
        (time.process_time() - cpu) * 1000 / steps,
        (time.perf_counter() - wall) * 1000 / steps,
    )


async def _measure_lever(workflows: int) -> SyncStepLever:
    samples: dict[str, list[tuple[float, float]]] = {"async": [], "sync": []}
    for round in range(LEVER_ROUNDS):
        for kind in ("async", "sync") if round % 2 == 0 else ("sync", "async"):
            samples[kind].append(await _per_step(lever_workflow, kind, workflows))
    cpu_ms = {kind: _median([c for c, _ in runs]) for kind, runs in samples.items()}
    wall_ms = {kind: _median([w for _, w in runs]) for kind, runs in samples.items()}
    return SyncStepLever(
        "sync step lever",
        LEVER_STATEMENTS,
        cpu_ms["async"],
        cpu_ms["sync"],
        wall_ms["async"],
        wall_ms["sync"],
        LEVER_ROUNDS,
    )


def _lever_engines_on(database_url: str) -> tuple[AsyncEngine, sa.Engine]:
    sync = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with sync.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_lever (id INT PRIMARY KEY, v INT)"))
        conn.execute(
            sa.text(
                "INSERT INTO bench_lever SELECT g, 0 FROM generate_series(1, :n) g"
                " ON CONFLICT DO NOTHING"
            ),
            {"n": LEVER_STATEMENTS},
        )
    asynchronous = create_async_engine(
        database_url.replace("postgresql://", "postgresql+asyncpg://")
    )
    return asynchronous, sync


@dataclass(frozen=True)
class Floor:
    kind: str
    cpu_ms_per_step: float
    wall_ms_per_step: float
    commits_per_step: float | None


@dataclass(frozen=True)
class PurchaseFloor:
    """A purchase's durable operations with nothing inside them, one after another."""

    kind: str
    cpu_ms_per_purchase: float  # this process's CPU: the loop, DBOS's threads, all of it
    wall_ms_per_purchase: float
    checkout_call_ms: float  # median, start until the first step's body has run
    operations: int = 9  # start, 3 steps, recv (timer and message), send, completion


@dataclass(frozen=True)
class TripFloor:
    """A trip's durable operations with nothing inside: the start, three steps, the end."""

    kind: str
    p50_ms: float  # start to result, one trip at a time
    cpu_ms_per_trip: float
    operations: int = 5


async def _measure_trips(trips: int) -> TripFloor:
    took: list[float] = []
    cpu = time.process_time()
    for n in range(trips):
        started = time.perf_counter()
        with SetWorkflowID(f"bench-trip-{n}-{time.time_ns()}"):
            handle = await DBOS.start_workflow_async(trip_workflow)
        await handle.get_result()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return TripFloor("trip", took[len(took) // 2], (time.process_time() - cpu) * 1000 / trips)


async def _measure_purchases(purchases: int) -> PurchaseFloor:
    calls: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(purchases):
        key = f"bench-purchase-{n}-{time.time_ns()}"
        done = _first_step_done[key] = asyncio.Event()
        started = time.perf_counter()
        with SetWorkflowID(key):
            handle = await DBOS.start_workflow_async(purchase_workflow)
        await done.wait()
        calls.append((time.perf_counter() - started) * 1000)
        await DBOS.send_async(key, "paid", "payment", idempotency_key=f"{key}-verdict")
        await handle.get_result()
        del _first_step_done[key]
    cpu_ms = (time.process_time() - cpu) * 1000 / purchases
    wall_ms = (time.perf_counter() - wall) * 1000 / purchases
    calls.sort()
    return PurchaseFloor("purchase", cpu_ms, wall_ms, calls[len(calls) // 2])


async def _measure(kind: str, workflows: int, counters: PostgresCounters | None) -> Floor:
    before = counters.read() if counters else None
    cpu_ms, wall_ms = await _per_step(steps_workflow, kind, workflows)
    steps = workflows * STEPS_PER_WORKFLOW
    commits = None
    if counters and before:
        await asyncio.sleep(11)  # let every backend publish its counters
        commits = (counters.read().commits - before.commits) / steps
    return Floor(kind, cpu_ms, wall_ms, commits)


async def measure_floor(
    database_url: str, workflows: int = 30, *, count_commits: bool = True
) -> list[Floor | PurchaseFloor | TripFloor | SyncStepLever]:
    """Run in-process against `database_url` (its DBOS tables get a few rows). Counting
    commits waits 11 s per kind for PostgreSQL's statistics; CPU and wall do not need it."""
    global _datasource, _lever_engines
    DBOS(config=DBOSConfig(name="widget-store-bench", system_database_url=database_url))
    _datasource = await AsyncSQLAlchemyDatasource.create(
        database_url.replace("postgresql://", "postgresql+psycopg://")
    )
    _lever_engines = _lever_engines_on(database_url)
    DBOS.launch()
    counters = PostgresCounters(database_url.replace("postgresql://", "postgresql+psycopg://"))
    counting = counters if count_commits else None
    try:
        await _measure("step", 3, None)  # warm up
        await _measure_purchases(3)  # warm up
        return [
            await _measure("step", workflows, counting),
            await _measure("transaction", workflows, counting),
            await _measure_purchases(workflows * 3),
            await _measure_trips(workflows * 3),
            await _measure_lever(max(2, workflows // 3)),
        ]
    finally:
        counters.close()
        DBOS.destroy()
        await _datasource.engine.dispose()
        await _lever_engines[0].dispose()
        _lever_engines[1].dispose()


def measured_apart(workflows: int) -> dict[str, float]:
    """The floors, measured by `python -m bench floor` in a process of its own on a
    PostgreSQL cluster of its own: an empty step's CPU and wall time, a purchase's and a
    trip's operations with nothing inside."""
    with tempfile.TemporaryDirectory(prefix="widget-store-floor-") as folder:
        subprocess.run(
            [
                *(sys.executable, "-m", "bench", "floor", "--workflows", str(workflows)),
                *("--no-commits", "--results", folder),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        floors = json.loads((Path(folder) / "dbos-floor.json").read_text())["floors"]
    by_kind = {floor["kind"]: floor for floor in floors}
    step, purchase, trip = by_kind["step"], by_kind["purchase"], by_kind["trip"]
    return {
        **step,
        "purchase_cpu_ms": purchase["cpu_ms_per_purchase"],
        "purchase_wall_ms": purchase["wall_ms_per_purchase"],
        "checkout_call_ms": purchase["checkout_call_ms"],
        "trip_p50_ms": trip["p50_ms"],
        "trip_cpu_ms": trip["cpu_ms_per_trip"],
    }
