"""This store against an earlier commit of itself (67e32ed, version 0.1), side by side.

Both are served the way the README serves them (`widget-store serve`), each on a private
PostgreSQL cluster of its own (fsync on); the earlier one from its own source and venv
(`bench/baseline.py`). Each measurement runs on one store, then on the other, and the
order flips every round, so a machine that speeds up or slows down weighs on both
alike. A figure is the median of its rounds, and every ratio is this store's median
over the earlier one's, from the same run.

- One app process each: one shopper (the sequential checkout call and the webhook), then
  eight (the store's CPU per purchase).
- Two app processes each: 32 shoppers (purchases/s and purchase p99).
- DBOS's empty step, measured in the same run (`bench/dbos_floor.py`), so that the
  store's figures can be read in units of what DBOS itself spends on one step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from bench.baseline import BASELINE_COMMIT, Build, build, current_label
from bench.dbos_floor import measured_apart
from bench.report import RESULTS, save_json
from bench.store import BenchStore, StoreOptions
from bench.throughput import Level, run_level

OLD, NEW = "old", "new"


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    seconds: float = 15.0  # each turn
    settle_s: float = 20.0  # after both stores start: recovery polls, cold caches
    warm_up_s: float = 5.0
    sequential: int = 1  # shoppers for the checkout and webhook latencies
    cpu_shoppers: int = 8  # shoppers for the CPU per purchase (one worker)
    busy_workers: int = 2
    busy_shoppers: int = 32
    floor_workflows: int = 30  # of ten empty steps each
    only_workers: int | None = None  # one phase only (quick A/B runs of one change)
    old_env: tuple[tuple[str, str], ...] = ()  # settings over each store's defaults
    new_env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            rounds=1,
            seconds=2.0,
            settle_s=0.0,
            warm_up_s=1.0,
            cpu_shoppers=2,
            busy_shoppers=4,
            floor_workflows=2,
        )

    def phases(self) -> list[tuple[int, tuple[int, ...]]]:
        """(app processes, shopper levels) per pair of stores."""
        every = [
            (1, (self.sequential, self.cpu_shoppers)),
            (self.busy_workers, (self.busy_shoppers,)),
        ]
        return [phase for phase in every if self.only_workers in (None, phase[0])]


@dataclass
class Runs:
    """Every turn, by store, app processes and shoppers."""

    levels: dict[tuple[str, int, int], list[Level]] = field(default_factory=dict)

    def add(self, side: str, workers: int, level: Level) -> None:
        self.levels.setdefault((side, workers, level.shoppers), []).append(level)

    def median(
        self, side: str, workers: int, shoppers: int, figure: Callable[[Level], float | None]
    ) -> float | None:
        values = [
            v
            for level in self.levels.get((side, workers, shoppers), [])
            if (v := figure(level)) is not None
        ]
        return median(values) if values else None

    def errors(self, side: str) -> int:
        return sum(
            level.errors
            for (s, _, _), levels in self.levels.items()
            if s == side
            for level in levels
        )

    def all(self) -> Iterator[tuple[str, int, Level]]:
        for (side, workers, _), levels in self.levels.items():
            for level in levels:
                yield side, workers, level


@dataclass(frozen=True)
class Row:
    label: str
    old: float | None
    new: float | None
    unit: str
    goal: float | None = None  # None: shown, no target
    ratio_goal: bool = True  # the goal is for new / old; else for new itself
    at_most: bool = True
    compared: bool = True  # whether new / old means anything

    @property
    def ratio(self) -> float | None:
        if not self.compared or self.old is None or self.new is None or not self.old:
            return None
        return self.new / self.old

    @property
    def judged(self) -> float | None:
        return self.ratio if self.ratio_goal else self.new

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.judged is None:
            return None
        return self.judged <= self.goal if self.at_most else self.judged >= self.goal

    def target_text(self) -> str:
        if self.goal is None:
            return ""
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {self.goal:g}x" if self.ratio_goal else f"{sign} {self.goal:g} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met, "target": self.target_text()}


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 0 if abs(value) >= 100 or unit == "" else 1
    return f"{value:,.{digits}f} {unit}".strip()


def figures(plan: Plan, runs: Runs) -> list[Row]:
    one, busy = 1, plan.busy_workers
    seq, cpu, crowd = plan.sequential, plan.cpu_shoppers, plan.busy_shoppers

    def both(
        workers: int, shoppers: int, figure: Callable[[Level], float | None]
    ) -> tuple[float | None, float | None]:
        return runs.median(OLD, workers, shoppers, figure), runs.median(
            NEW, workers, shoppers, figure
        )

    return [
        Row(
            f"store CPU per purchase, 1 worker, {cpu} shoppers",
            *both(one, cpu, lambda level: level.cpu_ms_per_purchase),
            "ms",
            0.45,
        ),
        Row(
            "sequential checkout call p50",
            *both(one, seq, lambda level: level.checkout_ms[0]),
            "ms",
            0.4,
        ),
        Row(
            f"purchases/s, {crowd} shoppers, {busy} workers",
            *both(busy, crowd, lambda level: level.purchases_per_s),
            "/s",
            2.5,
            at_most=False,
        ),
        Row(
            f"purchase p99, {crowd} shoppers, {busy} workers",
            *both(busy, crowd, lambda level: level.purchase_ms[2]),
            "ms",
            1500,
            ratio_goal=False,
        ),
        Row(
            "webhook p50 (sequential)",
            *both(one, seq, lambda level: level.webhook_ms[0]),
            "ms",
            10,
            ratio_goal=False,
        ),
        Row(
            "errors, every turn",
            runs.errors(OLD),
            runs.errors(NEW),
            "",
            0,
            ratio_goal=False,
            compared=False,
        ),
        # Shown for context, no targets.
        Row(
            "purchases/s, 1 worker, sequential",
            *both(one, seq, lambda level: level.purchases_per_s),
            "/s",
        ),
        Row(
            f"purchases/s, 1 worker, {cpu} shoppers",
            *both(one, cpu, lambda level: level.purchases_per_s),
            "/s",
        ),
        Row(
            "store CPU per purchase, 1 worker, sequential",
            *both(one, seq, lambda level: level.cpu_ms_per_purchase),
            "ms",
        ),
        Row(
            f"store CPU per purchase, {busy} workers, {crowd} shoppers",
            *both(busy, crowd, lambda level: level.cpu_ms_per_purchase),
            "ms",
        ),
        Row(
            f"SQL statements per purchase, 1 worker, {cpu} shoppers",
            *both(one, cpu, lambda level: level.statements_per_purchase),
            "",
        ),
        Row(
            f"PostgreSQL CPU per purchase, 1 worker, {cpu} shoppers",
            *both(one, cpu, lambda level: level.database_cpu_ms_per_purchase),
            "ms",
        ),
        Row(
            f"checkout call p50, {crowd} shoppers, {busy} workers",
            *both(busy, crowd, lambda level: level.checkout_ms[0]),
            "ms",
        ),
    ]


def table(rows: list[Row], old_label: str, new_label: str) -> str:
    lines = [
        f"| | {old_label} | {new_label} | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        verdict = {True: "met", False: "**not met**", None: ""}[row.met]
        lines.append(
            f"| {row.label} | {_num(row.old, row.unit)} | {_num(row.new, row.unit)} | "
            f"{ratio} | {row.target_text()} | {verdict} |"
        )
    return "\n".join(lines)


def floor_table(rows: list[Row], floor: dict[str, float], old_label: str, new_label: str) -> str:
    """The same figures in empty DBOS steps: CPU over a step's CPU, time over its wall."""
    cpu, wall = floor["cpu_ms_per_step"], floor["wall_ms_per_step"]
    lines = [
        f"| in empty DBOS steps (one: {cpu:.2f} ms CPU, {wall:.2f} ms wall, this run) "
        f"| {old_label} | {new_label} |",
        "|---|---|---|",
    ]
    by_label = {row.label: row for row in rows}
    for label, unit_ms, what in [
        (rows[0].label, cpu, "steps of CPU"),
        (rows[1].label, wall, "steps of wall time"),
        (rows[4].label, wall, "steps of wall time"),
        (rows[3].label, wall, "steps of wall time"),
    ]:
        row = by_label[label]
        old = "-" if row.old is None else f"{row.old / unit_ms:.1f}"
        new = "-" if row.new is None else f"{row.new / unit_ms:.1f}"
        lines.append(f"| {label} ({what}) | {old} | {new} |")
    return "\n".join(lines)


def measure_floor(workflows: int) -> dict[str, float]:
    """DBOS's own floor, from a process of its own on a cluster of its own."""
    return measured_apart(workflows)


def dbos_floor_table(rows: list[Row], floor: dict[str, float], new_label: str) -> str:
    """Each target next to what DBOS alone spends on a purchase's durable operations.

    A target below that floor cannot be met by any store built on these operations; the
    store's distance above it is what its own code (HTTP, SQL, the saga) costs.
    """
    if "purchase_cpu_ms" not in floor:
        return ""
    by_label = {row.label: row for row in rows}
    lines = [
        "| DBOS alone, a purchase's 9 operations with nothing inside (this run) "
        f"| target | DBOS floor | {new_label} | {new_label} above the floor |",
        "|---|---|---|---|---|",
    ]
    for label, floor_ms in [
        (rows[0].label, floor["purchase_cpu_ms"]),
        (rows[1].label, floor["checkout_call_ms"]),
    ]:
        row = by_label[label]
        goal = None if row.old is None or row.goal is None else row.old * row.goal
        target = "-" if goal is None else f"{goal:.1f} ms"
        new = "-" if row.new is None else f"{row.new:.1f} ms"
        above = "-" if row.new is None else f"{row.new - floor_ms:+.1f} ms"
        lines.append(f"| {label} | {target} | {floor_ms:.1f} ms | {new} | {above} |")
    return "\n".join(lines)


def _split(level: Level) -> str:
    """The turn's workflows by app process, for the per-turn line ("" with one process)."""
    split = level.workflows_by_worker
    if not split or len(split) < 2:
        return ""
    return ", workflows by worker " + "/".join(str(n) for n in split.values())


def _turn(store: BenchStore, shoppers: int, seconds: float) -> Level:
    return run_level(store, shoppers, seconds, None, count_commits=False)


def measure(plan: Plan, baseline: Build) -> tuple[Runs, dict[str, float]]:
    runs = Runs()
    floor: dict[str, float] = {}
    for workers, levels in plan.phases():
        options = {
            OLD: StoreOptions(workers=workers, build=baseline, env=dict(plan.old_env)),
            NEW: StoreOptions(workers=workers, env=dict(plan.new_env)),
        }
        with BenchStore(options[OLD]) as old, BenchStore(options[NEW]) as new:
            stores = {OLD: old, NEW: new}
            time.sleep(max(0.0, new.started_at + plan.settle_s - time.monotonic()))
            for store in stores.values():
                _turn(store, max(levels), plan.warm_up_s)
            for round_number in range(plan.rounds):
                for shoppers in levels:
                    turns = [OLD, NEW] if round_number % 2 == 0 else [NEW, OLD]
                    for side in turns:
                        level = _turn(stores[side], shoppers, plan.seconds)
                        runs.add(side, workers, level)
                        print(
                            f"  round {round_number + 1}, {workers} worker(s), {shoppers:>3} "
                            f"shoppers, {side}: {level.purchases_per_s:.1f} purchases/s, "
                            f"checkout p50 {level.checkout_ms[0] or 0:.0f} ms, "
                            f"{level.cpu_ms_per_purchase or 0:.0f} ms CPU per purchase, "
                            f"{level.errors} errors{_split(level)}",
                            flush=True,
                        )
        if not floor:  # between the phases, with no store running
            floor = measure_floor(plan.floor_workflows)
            print(
                f"  an empty DBOS step: {floor['cpu_ms_per_step']:.2f} ms CPU, "
                f"{floor['wall_ms_per_step']:.2f} ms wall; a purchase's operations, empty: "
                f"{floor['purchase_cpu_ms']:.1f} ms CPU, checkout call "
                f"{floor['checkout_call_ms']:.1f} ms",
                flush=True,
            )
    return runs, floor


def run(
    plan: Plan,
    *,
    commit: str = BASELINE_COMMIT,
    results: Path = RESULTS,
    name: str = "versus",
) -> Path:
    baseline = build(commit)
    old_label, new_label = baseline.short, current_label()
    print(
        f"{new_label} against {old_label}: {plan.rounds} round(s) of {plan.seconds:g} s turns, "
        "in turns that flip each round",
        flush=True,
    )
    started = time.time()
    runs, floor = measure(plan, baseline)
    rows = figures(plan, runs)
    print()
    print(table(rows, old_label, new_label))
    print()
    print(floor_table(rows, floor, old_label, new_label))
    print()
    print(dbos_floor_table(rows, floor, new_label))
    path = save_json(
        name,
        {
            "baseline": baseline.commit,
            "current": new_label,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "plan": asdict(plan),
            "floor": floor,
            "figures": [row.to_json() for row in rows],
            "runs": [
                {"store": side, "workers": workers, **level.to_json()}
                for side, workers, level in runs.all()
            ],
        },
        results,
    )
    print(f"\nsaved {path}")
    return path
