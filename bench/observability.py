"""What metrics and JSON logs cost: the same purchases on a store with them and one without.

Two stores run side by side (warmed up first), each on its own PostgreSQL cluster, identical but for
`WIDGET_STORE_METRICS` and `WIDGET_STORE_LOG_FORMAT`, both logging at INFO. Every level
is measured on each in turn, and the order flips each round, so that a slower hour of a
shared machine weighs on both alike. While the instrumented store is measured, a scraper
reads its /metrics every second (Prometheus' default is every 15 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from statistics import mean, median
from typing import Any

import httpx

from bench.store import BenchStore, StoreOptions
from bench.throughput import Level, run_level

OFF = {"WIDGET_STORE_METRICS": "0", "WIDGET_STORE_LOG_FORMAT": "text"}
ON = {"WIDGET_STORE_METRICS": "1", "WIDGET_STORE_LOG_FORMAT": "json"}
LOG_LEVEL = {"WIDGET_STORE_LOG_LEVEL": "INFO"}
SCRAPE_EVERY_S = 1.0
# A store just started polls DBOS's queue fast for its first 15 s (recovery), and its
# pools and PostgreSQL's caches are cold: let both settle, then buy a little on each.
SETTLE_AFTER_START_S = 20.0
WARM_UP_S = 5.0


@dataclass
class Comparison:
    shoppers: int
    off: list[Level]
    on: list[Level]

    def purchases_per_s(self, runs: list[Level]) -> float:
        return mean(level.purchases_per_s for level in runs)

    def cpu_ms(self, runs: list[Level]) -> float | None:
        values = [level.cpu_ms_per_purchase for level in runs if level.cpu_ms_per_purchase]
        return mean(values) if values else None

    def checkout_p50(self, runs: list[Level]) -> float | None:
        values = [level.checkout_ms[0] for level in runs if level.checkout_ms[0] is not None]
        return mean(values) if values else None

    @property
    def change_pct(self) -> float:
        """Purchases/s with metrics and JSON logs against without, in percent (means)."""
        off = self.purchases_per_s(self.off)
        return (self.purchases_per_s(self.on) / off - 1) * 100 if off else 0.0

    @property
    def paired_change_pct(self) -> float:
        """The median of each round's change: its two runs were back to back, so a
        machine that slows down between rounds weighs less on it than on the means."""
        changes = [
            (on.purchases_per_s / off.purchases_per_s - 1) * 100
            for off, on in zip(self.off, self.on, strict=True)
            if off.purchases_per_s
        ]
        return median(changes) if changes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "shoppers": self.shoppers,
            "off": [level.to_json() for level in self.off],
            "on": [level.to_json() for level in self.on],
            "purchases_per_s": {
                "off": self.purchases_per_s(self.off),
                "on": self.purchases_per_s(self.on),
            },
            "cpu_ms_per_purchase": {"off": self.cpu_ms(self.off), "on": self.cpu_ms(self.on)},
            "checkout_p50_ms": {
                "off": self.checkout_p50(self.off),
                "on": self.checkout_p50(self.on),
            },
            "change_pct": self.change_pct,
            "paired_change_pct": self.paired_change_pct,
        }


@contextmanager
def scraping(store: BenchStore) -> Iterator[None]:
    """Scrape the store's /metrics every second meanwhile; every scrape must answer 200."""
    statuses: list[int] = []
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(base_url=store.base_url, timeout=10) as client:
            while not stop.wait(SCRAPE_EVERY_S):
                statuses.append(client.get("/metrics").status_code)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert statuses and set(statuses) == {200}, statuses


def compare(
    levels: list[int],
    seconds: float,
    rounds: int,
    workers: int,
    *,
    control: bool = False,
    settle_s: float = SETTLE_AFTER_START_S,
) -> list[Comparison]:
    """Each level on each store in turn. `control` runs the second store without metrics
    and JSON logs too: what the comparison reads when there is nothing to find, which is
    how much of a difference the machine's noise alone makes. The smoke run skips the
    settling (`settle_s=0`): it proves the benchmark runs, not what it measures."""
    return compare_settings(
        {**OFF, **LOG_LEVEL},
        {**(OFF if control else ON), **LOG_LEVEL},
        levels,
        seconds,
        rounds,
        workers,
        while_on=None if control else scraping,
        settle_s=settle_s,
    )


def compare_settings(
    off_env: dict[str, str],
    on_env: dict[str, str],
    levels: list[int],
    seconds: float,
    rounds: int,
    workers: int,
    *,
    while_on: Callable[[BenchStore], AbstractContextManager[None]] | None = None,
    settle_s: float = SETTLE_AFTER_START_S,
) -> list[Comparison]:
    """Two stores identical but for `off_env` and `on_env`, each level on each in turn, the
    order flipped every round. `while_on`, if given, runs beside each of the second
    store's turns (a scraper, a check that the outbox drained) and raises if what it
    watches went wrong."""
    with (
        BenchStore(StoreOptions(workers=workers, env=off_env)) as off,
        BenchStore(StoreOptions(workers=workers, env=on_env)) as on,
    ):
        time.sleep(max(0.0, off.started_at + settle_s - time.monotonic()))
        for store in (off, on):
            run_level(store, max(levels), min(WARM_UP_S, seconds), None, count_commits=False)
        results = {shoppers: Comparison(shoppers, [], []) for shoppers in levels}
        for round_number in range(rounds):
            for shoppers in levels:
                turns = [("off", off), ("on", on)]
                for label, store in turns if round_number % 2 == 0 else turns[::-1]:
                    if label == "on" and while_on is not None:
                        with while_on(store):
                            level = run_level(store, shoppers, seconds, None, count_commits=False)
                    else:
                        level = run_level(store, shoppers, seconds, None, count_commits=False)
                    runs = results[shoppers].on if label == "on" else results[shoppers].off
                    runs.append(level)
                    print(
                        f"  round {round_number + 1}, {shoppers:>3} shoppers, {label:>3}: "
                        f"{level.purchases_per_s:.1f} purchases/s, "
                        f"{level.cpu_ms_per_purchase or 0:.0f} ms CPU per purchase",
                        flush=True,
                    )
        return list(results.values())


def table(comparisons: list[Comparison]) -> str:
    rows = [
        f"{'shoppers':>8} {'purch/s off':>12} {'purch/s on':>11} {'change':>8} {'paired':>8} "
        f"{'CPU ms/p off':>13} {'CPU ms/p on':>12} {'checkout p50 off/on ms':>23}"
    ]
    for c in comparisons:
        cpu_off, cpu_on = c.cpu_ms(c.off), c.cpu_ms(c.on)
        p50_off, p50_on = c.checkout_p50(c.off), c.checkout_p50(c.on)
        rows.append(
            f"{c.shoppers:>8} {c.purchases_per_s(c.off):>12.1f} {c.purchases_per_s(c.on):>11.1f} "
            f"{c.change_pct:>+7.1f}% {c.paired_change_pct:>+7.1f}% "
            f"{cpu_off or 0:>13.0f} {cpu_on or 0:>12.0f} "
            f"{f'{p50_off or 0:.0f} / {p50_on or 0:.0f}':>23}"
        )
    return "\n".join(rows)


# A purchase is a checkout, a webhook and one or two long polls of the order: at most
# five requests, one webhook delivery and one new checkout to count.
REQUESTS_PER_PURCHASE = 5


def per_operation_costs() -> dict[str, float]:
    """`bench.observability_micro`'s figures, from a process of its own (prometheus-client
    chooses multiprocess mode once, on import)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.observability_micro"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures: dict[str, float] = json.loads(result.stdout)
    request_us = figures["with_request_metrics_us"] - figures["bare_request_us"]
    figures["per_purchase_us"] = (
        REQUESTS_PER_PURCHASE * request_us
        + figures["record_webhook_us"]
        + figures["record_checkout_started_us"]
    )
    return figures


def per_operation_table(figures: dict[str, float], cpu_ms_per_purchase: float | None) -> str:
    request_us = figures["with_request_metrics_us"] - figures["bare_request_us"]
    share = (
        f", {figures['per_purchase_us'] / (cpu_ms_per_purchase * 10):.2f} % of the "
        f"{cpu_ms_per_purchase:.0f} ms of CPU a purchase takes without them"
        if cpu_ms_per_purchase
        else ""
    )
    return "\n".join(
        [
            "Per operation (CPU time, multiprocess mode):",
            f"  request metrics per request    {request_us:8.1f} us",
            f"  a webhook delivery counted     {figures['record_webhook_us']:8.1f} us",
            f"  a log record, text / JSON      {figures['text_record_us']:8.1f} / "
            f"{figures['json_record_us']:.1f} us",
            f"  a scrape's exposition          {figures['scrape_ms']:8.2f} ms",
            f"  per purchase, at most          {figures['per_purchase_us']:8.1f} us{share}",
        ]
    )
