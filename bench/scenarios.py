"""The benchmark scenarios the command line runs."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench import load_client
from bench.report import (
    RESULTS,
    plot,
    save_json,
    target,
    throughput_table,
    throughput_targets,
)
from bench.store import BenchStore, StoreOptions
from bench.throughput import idle_rate, run_level
from widget_store.durability import MAX_THREADS


def throughput(
    levels: list[int],
    seconds: float,
    workers: int,
    *,
    embedded: bool = False,
    results: Path = RESULTS,
    name: str | None = None,
    measure_idle: bool = True,
    poll_s: float | None = None,
) -> None:
    backend = "sqlite" if embedded else "postgres"
    with BenchStore(StoreOptions(backend=backend, workers=workers)) as store:
        idle = idle_rate(store) if measure_idle else None
        measured = []
        for shoppers in levels:
            level = run_level(store, shoppers, seconds, idle, poll_s)
            measured.append(level)
            print(throughput_table([level]).splitlines()[-1], flush=True)
    label = name or f"throughput-{backend}-{workers}w"
    print(f"\nThroughput, {backend}, {workers} app process(es), {seconds:g} s per level")
    print(throughput_table(measured))
    print(throughput_targets(measured, idle))
    save_json(
        label,
        {
            "backend": backend,
            "workers": workers,
            "seconds_per_level": seconds,
            "idle": idle.__dict__ if idle else None,
            "levels": [level.to_json() for level in measured],
        },
        results,
    )
    picture = plot(measured, results / f"{label}.png", label)
    print(f"saved {results / (label + '.json')} and {picture}")


def observability(
    levels: list[int],
    seconds: float,
    rounds: int,
    workers: int,
    *,
    results: Path = RESULTS,
    name: str = "observability",
    control: bool = False,
    settle_s: float | None = None,
) -> None:
    from bench import observability as cost

    what = "Control: two stores both without" if control else "Metrics and JSON logs off and on"
    print(f"{what}, {workers} app process(es), {seconds:g} s per run, {rounds} round(s), in turns")
    settling = {} if settle_s is None else {"settle_s": settle_s}
    comparisons = cost.compare(levels, seconds, rounds, workers, control=control, **settling)
    figures = cost.per_operation_costs()
    cpu_off = [cpu for c in comparisons if (cpu := c.cpu_ms(c.off))]
    print()
    print(cost.table(comparisons))
    print(cost.per_operation_table(figures, min(cpu_off) if cpu_off else None))
    plan = {"workers": workers, "seconds_per_run": seconds, "rounds": rounds}
    _paired_verdict_saved(
        "with them vs without",
        comparisons,
        name,
        {**plan, "control": control},
        {"per_operation": figures},
        results,
    )


def relay(
    levels: list[int],
    seconds: float,
    rounds: int,
    workers: int,
    *,
    results: Path = RESULTS,
    name: str = "relay",
    settle_s: float | None = None,
) -> None:
    from bench import observability as cost
    from bench import relay_cost

    print(
        f"The outbox relay off and on (NATS JetStream), {workers} app process(es), "
        f"{seconds:g} s per run, {rounds} round(s), in turns"
    )
    comparisons = relay_cost.compare(levels, seconds, rounds, workers, settle_s=settle_s)
    print()
    print(cost.table(comparisons))
    plan = {"workers": workers, "seconds_per_run": seconds, "rounds": rounds}
    _paired_verdict_saved("relaying vs not", comparisons, name, plan, {}, results)


def _paired_verdict_saved(
    what: str,
    comparisons: list[Any],
    name: str,
    plan: dict[str, Any],
    extra: dict[str, Any],
    results: Path,
) -> None:
    """An off/on comparison's verdict (its worst level, paired, against 90 %), saved."""
    worst = min(comparisons, key=lambda c: c.paired_change_pct)
    print(
        target(
            f"purchases/s {what} ({worst.shoppers} shoppers, worst, paired)",
            100 + worst.paired_change_pct,
            90,
            at_most=False,
            unit="%",
        )
    )
    levels = [c.to_json() for c in comparisons]
    save_json(name, {**plan, "levels": levels, **extra}, results)
    print(f"saved {results / (name + '.json')}")


def recovery(in_flight: int, results: Path = RESULTS) -> None:
    from bench import recovery as recovery_bench

    measured = recovery_bench.run(in_flight)
    print(f"Recovery after kill -9, {measured.in_flight} checkouts in flight")
    print(target("serving again after the crash", measured.serving_s, 1.0, at_most=True, unit="s"))
    print(
        target(
            "every in-flight saga resumed after the crash",
            measured.resumed_s,
            2.0,
            at_most=True,
            unit="s",
        )
    )
    completed = "-" if measured.completed_s is None else f"{measured.completed_s:.2f} s"
    print(
        f"  (all of them done, including a {recovery_bench.DISPATCH_S:g} s dispatch: {completed})"
    )
    save_json("recovery", measured.__dict__, results)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:.1f}" for rate in rates)


def waiting(count: int, seconds: float, results: Path = RESULTS, rounds: int = 3) -> None:
    from bench import waiting as waiting_bench

    measured = waiting_bench.run(count, seconds, rounds=rounds)
    ratio = measured.purchases_per_s_waiting / measured.purchases_per_s_idle * 100
    m = measured
    print(f"{m.waiting} checkouts waiting for payment (opened at {m.opened_per_s:.0f}/s)")
    print(f"  resident memory: {m.rss_mb_idle:.0f} MB idle, {m.rss_mb_waiting:.0f} MB with them")
    print(f"  threads: {measured.threads_idle} idle, {measured.threads_waiting} with them")
    print(
        f"  other shoppers: {measured.purchases_per_s_idle:.1f}/s idle, "
        f"{measured.purchases_per_s_waiting:.1f}/s with them (medians of turns, in turns "
        f"with a store like it: {_rates(m.idle_turns)} against {_rates(m.waiting_turns)})"
    )
    print(
        f"  paid all at once: drained at {m.drained_per_s:.1f}/s "
        f"(over the first {m.drain_window_s:.0f} s)"
    )
    print(
        target(
            "resident memory with them waiting",
            measured.rss_mb_waiting,
            300,
            at_most=True,
            unit="MB",
        )
    )
    print(
        target(
            "threads added by them (DBOS's pool is capped)",
            measured.threads_waiting - measured.threads_idle,
            MAX_THREADS,
            at_most=True,
            unit="",
        )
    )
    print(target("other shoppers' throughput vs idle", ratio, 80, at_most=False, unit="%"))
    save_json(f"waiting-{count}", measured.__dict__, results)


def floor(results: Path = RESULTS, workflows: int = 30, *, count_commits: bool = True) -> None:
    import asyncio

    from bench.dbos_floor import PurchaseFloor, SyncStepLever, TripFloor, measure_floor
    from tests.chaos.cluster import PrivateCluster

    cluster = PrivateCluster(durable=True, statements=True)
    cluster.create()
    try:
        floors = asyncio.run(measure_floor(cluster.url, workflows, count_commits=count_commits))
    finally:
        cluster.destroy()
    print("DBOS's own cost per durable step (empty steps, no store around them):")
    for f in floors:
        if isinstance(f, PurchaseFloor):
            print(
                f"  a purchase's {f.operations} operations, empty: CPU "
                f"{f.cpu_ms_per_purchase:.1f} ms, wall {f.wall_ms_per_purchase:.1f} ms, "
                f"start to first step {f.checkout_call_ms:.1f} ms"
            )
            continue
        if isinstance(f, TripFloor):
            print(
                f"  a trip's {f.operations} operations, empty: p50 {f.p50_ms:.1f} ms, "
                f"CPU {f.cpu_ms_per_trip:.1f} ms"
            )
            continue
        if isinstance(f, SyncStepLever):
            print(
                f"  a step running a {f.statements}-statement transaction, in turns "
                f"({f.rounds} rounds, medians):\n"
                f"    async body, asyncpg (as the store's steps): CPU {f.async_cpu_ms:.2f} ms, "
                f"wall {f.async_wall_ms:.2f} ms\n"
                f"    sync body, psycopg, through run_step_async:  CPU {f.sync_cpu_ms:.2f} ms, "
                f"wall {f.sync_wall_ms:.2f} ms "
                f"({f.sync_cpu_ms / f.async_cpu_ms:.2f}x CPU)"
            )
            continue
        commits = "-" if f.commits_per_step is None else f"{f.commits_per_step:.1f}"
        print(
            f"  {f.kind:<12} CPU {f.cpu_ms_per_step:.2f} ms, wall {f.wall_ms_per_step:.2f} ms, "
            f"commits {commits} per step"
        )
    save_json("dbos-floor", {"floors": [f.__dict__ for f in floors]}, results)


def versus(args: argparse.Namespace) -> None:
    """This store against an earlier commit of it, in turns (bench/versus.py)."""
    import dataclasses

    from bench import versus as versus_bench

    plan = versus_bench.Plan.smoke() if args.smoke else versus_bench.Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.seconds:
        plan = dataclasses.replace(plan, seconds=args.seconds)
    plan = dataclasses.replace(
        plan,
        only_workers=args.only_workers,
        old_env=tuple(tuple(item.split("=", 1)) for item in args.old_env),
        new_env=tuple(tuple(item.split("=", 1)) for item in args.new_env),
    )
    if args.smoke:
        results = args.results or Path(tempfile.gettempdir()) / "bench-smoke"
    else:
        results = args.results or RESULTS
    name = args.name or ("smoke-versus" if args.smoke else "versus")
    versus_bench.run(plan, commit=args.commit, results=results, name=name)


def trips(args: argparse.Namespace) -> int:
    """The trip saga on the store and on Temporal, side by side; the exit status."""
    import dataclasses

    from bench import trips as trips_bench

    if args.smoke:
        results = args.results or Path(tempfile.gettempdir()) / "bench-smoke"
        bench = trips_bench.TripBench.smoke(results, only=args.only)
    else:
        bench = trips_bench.TripBench(
            rounds=args.rounds,
            seconds=args.seconds,
            kill_trips=args.kill_trips,
            only=args.only,
            results=args.results or RESULTS,
        )
    bench = dataclasses.replace(
        bench,
        retry_initial_s=args.retry_initial_ms / 1000,
        temporal_timer_shift_ms=(
            None if args.temporal_timer_shift_ms < 0 else args.temporal_timer_shift_ms
        ),
        temporal_in_memory=args.temporal_in_memory,
        temporal_unsandboxed=args.temporal_unsandboxed,
        store_workers=args.store_workers,
        name=args.name or bench.name,
    )
    return trips_bench.run(bench)


def smoke(results: Path) -> None:
    """A few seconds of each benchmark, no targets: proves the benchmarks still run."""
    throughput([1, 4], 2.0, 1, results=results, name="smoke-throughput", measure_idle=False)
    recovery(6, results)
    waiting(20, 2.0, results, rounds=1)
    observability([2], 2.0, 1, 1, results=results, name="smoke-observability", settle_s=0.0)
    relay([2], 2.0, 1, 1, results=results, name="smoke-relay", settle_s=0.0)
    load_client.run(2, 1.0, 1, 1, results, name="smoke-client")
