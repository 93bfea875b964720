"""Printing benchmark figures beside their targets, saving them as JSON, and the plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.throughput import IdleRate, Level

RESULTS = Path(__file__).resolve().parent / "results"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def throughput_table(levels: Sequence[Level]) -> str:
    header = (
        f"{'shoppers':>8} {'purch/s':>8} {'errors':>6} "
        f"{'checkout p50/p95/p99 ms':>26} {'webhook p50/p95/p99 ms':>26} "
        f"{'CPU ms/p':>8} {'commits/p':>9} {'stmts/p':>8}"
    )
    rows = [header]
    for level in levels:
        checkout = "/".join(_ms(v) for v in level.checkout_ms)
        webhook = "/".join(_ms(v) for v in level.webhook_ms)
        rows.append(
            f"{level.shoppers:>8} {level.purchases_per_s:>8.1f} {level.errors:>6} "
            f"{checkout:>26} {webhook:>26} {_num(level.cpu_ms_per_purchase):>8} "
            f"{_num(level.commits_per_purchase):>9} {_num(level.statements_per_purchase):>8}"
        )
    return "\n".join(rows)


def target(label: str, value: float | None, goal: float, *, at_most: bool, unit: str) -> str:
    sign = "<=" if at_most else ">="
    if value is None:
        return f"  {label:<44} {'not measured':>12}   target {sign} {goal:g}{unit}"
    met = value <= goal if at_most else value >= goal
    verdict = "met" if met else "NOT MET"
    # Enough digits that a value shown equal to its goal is never the one that missed it.
    if unit == "" and float(value).is_integer():
        digits = 0  # a count
    else:
        digits = 2 if unit == "x" or abs(value) < 10 else 1
    shown = f"{value:>10.{digits}f}"
    return f"  {label:<44} {shown}{unit:<2}   target {sign} {goal:g}{unit}   {verdict}"


def throughput_targets(levels: Sequence[Level], idle: IdleRate | None) -> str:
    by = {level.shoppers: level for level in levels}
    lines = ["Targets:"]
    if 32 in by:
        lines.append(
            target(
                "purchases/s at 32 shoppers", by[32].purchases_per_s, 60, at_most=False, unit="/s"
            )
        )
        lines.append(
            target(
                "checkout p99 at 32 shoppers", by[32].checkout_ms[2], 1000, at_most=True, unit="ms"
            )
        )
    if 1 in by:
        lines.append(
            target("checkout p50, one shopper", by[1].checkout_ms[0], 10, at_most=True, unit="ms")
        )
        lines.append(
            target("webhook p50, one shopper", by[1].webhook_ms[0], 10, at_most=True, unit="ms")
        )
    busiest = max(levels, key=lambda level: level.purchases) if levels else None
    if busiest:
        lines.append(
            target(
                f"commits per paid purchase ({busiest.shoppers} shoppers)",
                busiest.commits_per_purchase,
                30,
                at_most=True,
                unit="",
            )
        )
        lines.append(
            target(
                f"server CPU per purchase ({busiest.shoppers} shoppers)",
                busiest.cpu_ms_per_purchase,
                15,
                at_most=True,
                unit="ms",
            )
        )
    lines.append(
        target(
            "idle app commits per second",
            idle.commits_per_s if idle else None,
            2,
            at_most=True,
            unit="/s",
        )
    )
    return "\n".join(lines)


def save_json(name: str, payload: dict[str, Any], folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def plot(levels: Sequence[Level], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shoppers = [level.shoppers for level in levels]
    figure, throughput_axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    throughput_axis.plot(
        shoppers, [level.purchases_per_s for level in levels], "o-", color="tab:blue"
    )
    throughput_axis.set_xlabel("concurrent shoppers")
    throughput_axis.set_ylabel("completed purchases/s", color="tab:blue")
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xticks(shoppers, [str(s) for s in shoppers])
    latency_axis = throughput_axis.twinx()
    latency_axis.plot(
        shoppers, [level.checkout_ms[2] or 0 for level in levels], "s--", color="tab:red"
    )
    latency_axis.set_ylabel("checkout p99 (ms)", color="tab:red")
    throughput_axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
