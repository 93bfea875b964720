"""Throughput and latency at several concurrency levels, with CPU and database cost."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.load import percentile, shop
from bench.metrics import cpu_seconds
from bench.store import BenchStore

IDLE_WINDOW_S = 20.0
# An app just started polls DBOS's queue fast (recovery) and its schedules fast (the
# first minute): "idle" is measured once both have settled to their steady pace.
QUIET_AFTER_START_S = 75.0
# PostgreSQL backends publish their counters when a transaction ends (at most once a
# second) or after 10 s idle: read them once everything has been quiet that long.
STATS_SETTLE_S = 11.0


@dataclass
class Level:
    shoppers: int
    purchases: int
    errors: int
    purchases_per_s: float
    checkout_ms: tuple[float | None, float | None, float | None]
    webhook_ms: tuple[float | None, float | None, float | None]
    cpu_ms_per_purchase: float | None
    commits_per_purchase: float | None
    statements_per_purchase: float | None
    # A whole purchase: checkout, webhook, and the order seen paid.
    purchase_ms: tuple[float | None, float | None, float | None] = (None, None, None)
    # The private PostgreSQL server's CPU (its backends come and go: those alive at the end).
    database_cpu_ms_per_purchase: float | None = None
    # Workflows started in the turn, by app process (PostgreSQL only): how evenly they shared it.
    workflows_by_worker: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _p(values: list[float]) -> tuple[float | None, float | None, float | None]:
    return (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99))


@dataclass(frozen=True)
class IdleRate:
    commits_per_s: float
    statements_per_s: float


def idle_rate(store: BenchStore, seconds: float = IDLE_WINDOW_S) -> IdleRate | None:
    """What the app does to the database while nobody shops (schedulers, pollers)."""
    if store.counters is None:
        return None
    time.sleep(max(STATS_SETTLE_S, store.started_at + QUIET_AFTER_START_S - time.monotonic()))
    before = store.counters.read()
    time.sleep(seconds)
    after = store.counters.read()
    return IdleRate(
        (after.commits - before.commits) / seconds,
        ((after.statements or 0) - (before.statements or 0)) / seconds,
    )


def run_level(
    store: BenchStore,
    shoppers: int,
    seconds: float,
    idle: IdleRate | None,
    poll_s: float | None = None,
    *,
    count_commits: bool = True,
) -> Level:
    """One level of load. Counting commits waits for PostgreSQL's statistics to settle
    (11 s); comparisons that need only throughput and CPU skip it. Statements need no
    wait (pg_stat_statements counts each as it ends), so they are always counted."""
    price = store.price_cents()
    counters = store.counters
    counters_before = counters.read() if counters else None
    cpu_before = cpu_seconds(store.pids())
    database_before = cpu_seconds(store.database_pids())
    started = time.monotonic()
    started_epoch_ms = int(time.time() * 1000)
    result = asyncio.run(
        shop(
            store.base_url,
            shoppers=shoppers,
            seconds=seconds,
            secret=store.secret,
            price_cents=price,
            poll_s=poll_s,
            webhook_names_payment=store.webhook_names_payment,
            watches_status=store.watches_status,
        )
    )
    store.settle()
    cpu_used = cpu_seconds(store.pids()) - cpu_before
    database_used = cpu_seconds(store.database_pids()) - database_before
    commits = statements = None
    if counters and counters_before:
        if count_commits:
            time.sleep(STATS_SETTLE_S)
        counters_after = counters.read()
        elapsed = time.monotonic() - started
        idle_commits = idle.commits_per_s * elapsed if idle else 0.0
        idle_statements = idle.statements_per_s * elapsed if idle else 0.0
        if result.purchases:
            made = counters_after.commits - counters_before.commits - idle_commits
            commits = made / result.purchases if count_commits else None
            if counters_after.statements is not None and counters_before.statements is not None:
                ran = counters_after.statements - counters_before.statements - idle_statements
                statements = ran / result.purchases
    split = counters.workflows_by_executor(started_epoch_ms) if counters else None
    return Level(
        shoppers=shoppers,
        purchases=result.purchases,
        errors=result.errors,
        purchases_per_s=result.rate,
        checkout_ms=_p(result.checkout_ms),
        webhook_ms=_p(result.webhook_ms),
        cpu_ms_per_purchase=cpu_used * 1000 / result.purchases if result.purchases else None,
        commits_per_purchase=commits,
        statements_per_purchase=statements,
        purchase_ms=_p(result.purchase_ms),
        database_cpu_ms_per_purchase=(
            database_used * 1000 / result.purchases if result.purchases and store.cluster else None
        ),
        workflows_by_worker=split,
    )
