"""The benchmark scenarios the command line runs."""

from __future__ import annotations

from pathlib import Path

from bench.report import RESULTS, plot, save_json, throughput_table, throughput_targets
from bench.store import BenchStore, StoreOptions
from bench.throughput import idle_rate, run_level


def throughput(
    levels: list[int],
    seconds: float,
    workers: int,
    *,
    embedded: bool = False,
    results: Path = RESULTS,
    name: str | None = None,
) -> None:
    backend = "sqlite" if embedded else "postgres"
    with BenchStore(StoreOptions(backend=backend, workers=workers)) as store:
        idle = idle_rate(store)
        measured = []
        for shoppers in levels:
            level = run_level(store, shoppers, seconds, idle)
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
