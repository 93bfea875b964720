"""Chaos runs against the real store (`widget-store serve` on a private PostgreSQL).

Two modes:

- `random_faults`: concurrent shoppers doing mixed checkouts while the app is killed
  (`kill -9`, the crash button) and PostgreSQL is restarted at random moments;
- `crash_at_every_step`: one order at a time, the app killed right after each saga step
  and each compensation in turn (the fault-injection hook, `/_faults`).

Both wait for every order to settle, then check the invariants and return a report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from tests.chaos.cluster import PrivateCluster
from tests.chaos.invariants import Check, check_invariants
from tests.chaos.shoppers import (
    EXPECTED,
    NO_VERDICT,
    SCARCE_PRODUCT,
    Channel,
    Checkout,
    Shoppers,
)
from tests.helpers import NOT_YET, eventually
from tests.server import ServerProcess
from widget_store.checkpoints import CHECKOUT_CRASH_POINTS, Checkpoint
from widget_store.config import Database

TERMINAL = ("DISPATCHED", "CANCELLED")
# The storm's own record of the stock it added (not a table of the store's).
RESTOCK_LEDGER = (
    "CREATE TABLE IF NOT EXISTS chaos_restocks"
    " (restock_id serial PRIMARY KEY, product_id integer NOT NULL, units integer NOT NULL)"
)
T = TypeVar("T")
RECOVERY_LIMIT_S = 120.0  # longer than this, a recovery is reported as never
# The storm's own webhook secret: its shoppers sign direct verdicts with it.
STORM_WEBHOOK_SECRET = "whsec_chaos_storm_3kT9vQ2mXw7Lp4Rz"
TIMED_OUT = "payment timed out"


@dataclass
class FaultRecord:
    kind: str
    at_s: float
    recovered_after_s: float | None = None  # until /healthz answers again
    checkout_after_s: float | None = None  # until a new checkout goes through again
    note: str = ""


@dataclass
class Report:
    mode: str
    seconds: float = 0.0
    checkouts: int = 0
    placed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    # Verdicts delivered, by kind and channel (the provider's page, a direct webhook).
    channels: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    # Orders that timed out only because an outage outlasted their payment deadline: the
    # shopper's verdict was held up by the outage and then refused as too late. Their
    # compensation is the correct one, so they are reported but are not failures.
    late: list[str] = field(default_factory=list)
    # When each fault began and when new checkouts went through again (epoch seconds).
    outages: list[tuple[float, float]] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    client_retries: Counter[str] = field(default_factory=Counter)
    checks: list[Check] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return sum(len(check.violations) for check in self.checks)

    def render(self) -> str:
        lines = [
            f"Chaos run ({self.mode}): {self.checkouts} checkouts in {self.seconds:.0f} s",
            f"  placed {self.placed}; refused: {dict(self.refused) or 'none'}",
            "Outcomes by scenario:",
        ]
        for scenario, counts in sorted(self.outcomes.items()):
            lines.append(f"  {scenario:<36} {dict(counts)}")
        if self.channels:
            lines.append("Verdicts delivered by:")
            for scenario, counts in sorted(self.channels.items()):
                lines.append(f"  {scenario:<36} {dict(counts)}")
            lines.append(f"  direct webhooks: {self.direct_share:.0%} of verdicts delivered")
        lines.append("Faults injected:")
        by_kind: dict[str, list[FaultRecord]] = defaultdict(list)
        for fault in self.faults:
            by_kind[fault.kind].append(fault)
        for kind, faults in by_kind.items():
            lines.append(f"  {kind:<36} x{len(faults):<3} {_recovery(faults)}")
        if self.client_retries:
            lines.append(f"Client retries during outages: {sum(self.client_retries.values())}")
        lines.append("Invariants:")
        for check in self.checks:
            verdict = "PASS" if not check.violations else f"FAIL ({len(check.violations)})"
            lines.append(f"  {verdict:<9} {check.name}")
            lines.extend(f"            - {v}" for v in check.violations[:10])
        if self.late:
            lines.append(
                f"Timed out because an outage outlasted the payment deadline ({len(self.late)};"
                " compensated correctly, not failures):"
            )
            lines.extend(f"  - {u}" for u in self.late[:20])
        if self.unexpected:
            lines.append(f"Outcomes other than the shopper intended ({len(self.unexpected)}):")
            lines.extend(f"  - {u}" for u in self.unexpected[:20])
        lines.append(f"Invariant violations: {self.violations}")
        return "\n".join(lines)

    @property
    def direct_share(self) -> float:
        """The share of delivered verdicts that came by a direct signed webhook."""
        direct = sum(c.get("webhook", 0) for c in self.channels.values())
        total = sum(sum(c.values()) for c in self.channels.values())
        return direct / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "seconds": round(self.seconds, 1),
            "checkouts": self.checkouts,
            "placed": self.placed,
            "refused": dict(self.refused),
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
            "channels": {k: dict(v) for k, v in self.channels.items()},
            "unexpected": self.unexpected,
            "late": self.late,
            "faults": [asdict(f) for f in self.faults],
            "outages": self.outages,
            "client_retries": dict(self.client_retries),
            "invariants": {c.name: c.violations for c in self.checks},
            "violations": self.violations,
        }


def _recovery(faults: list[FaultRecord]) -> str:
    parts = []
    for label, times in (
        ("serving", [f.recovered_after_s for f in faults]),
        ("checkouts", [f.checkout_after_s for f in faults]),
    ):
        measured = [t for t in times if t is not None]
        if measured:
            parts.append(
                f"{label} again after median {statistics.median(measured):.2f} s,"
                f" max {max(measured):.2f} s"
            )
    return "; ".join(parts)


class Storm:
    """The store on its private cluster, and the means to hurt both."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.cluster = PrivateCluster()
        self.cluster.create()
        self.database = Database.parse(self.cluster.url)
        self.server = ServerProcess(
            {"WIDGET_STORE_DATABASE_URL": self.cluster.url, **env}, workdir / "server.log"
        )
        self.started = time.monotonic()

    def __enter__(self) -> Storm:
        self.server.start()
        self.server.worker_pid(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.cluster.destroy()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stock(self) -> dict[int, int]:
        engine = sa.create_engine(self.database.sync_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT product_id, inventory FROM products"))
                return {row.product_id: row.inventory for row in rows}
        finally:
            engine.dispose()

    def restock(self, units: dict[int, int]) -> None:
        """Add stock, and note it in the storm's ledger in the same transaction.

        A PostgreSQL restart can end the connection after COMMIT has taken effect but
        before the answer arrives, so the harness cannot count restocks by what it was
        told: one run counted 5 units fewer than it had added, and stock conservation
        failed on the harness's own arithmetic. The ledger row commits if and only if
        the stock does; `restocked()` sums the ledger.
        """
        engine = sa.create_engine(self.database.sync_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(RESTOCK_LEDGER))
                for product_id, added in units.items():
                    conn.execute(
                        sa.text(
                            "UPDATE products SET inventory = inventory + :n WHERE product_id = :p"
                        ),
                        {"n": added, "p": product_id},
                    )
                    conn.execute(
                        sa.text("INSERT INTO chaos_restocks (product_id, units) VALUES (:p, :n)"),
                        {"n": added, "p": product_id},
                    )
        finally:
            engine.dispose()

    def restocked(self) -> Counter[int]:
        """Every unit the storm added, by product, from its ledger."""
        engine = sa.create_engine(self.database.sync_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(RESTOCK_LEDGER))
                rows = conn.execute(
                    sa.text("SELECT product_id, sum(units) FROM chaos_restocks GROUP BY product_id")
                )
                return Counter({product_id: int(units) for product_id, units in rows})
        finally:
            engine.dispose()

    def kill_worker(self) -> FaultRecord:
        at = self.elapsed()
        pid = self.server.worker_pid()
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.server.new_worker_after(pid, timeout=120)
        serving = time.monotonic() - started
        return FaultRecord("kill -9 of the app process", at, serving, self.probe_checkout(started))

    def press_crash_button(self) -> FaultRecord:
        at = self.elapsed()
        pid = self.server.worker_pid()
        started = time.monotonic()
        with contextlib.suppress(httpx.TransportError):  # it may die before it answers
            self.server.http.post("/crash_application", timeout=5)
        self.server.new_worker_after(pid, timeout=120)
        serving = time.monotonic() - started
        return FaultRecord("crash button", at, serving, self.probe_checkout(started))

    def restart_postgres(self, down_for_s: float) -> FaultRecord:
        at = self.elapsed()
        self.cluster.restart(down_for_s)
        back = time.monotonic()
        _within(
            RECOVERY_LIMIT_S,
            lambda: self.server.http.get("/healthz", timeout=2),
            lambda response: response.status_code == 200,
        )
        serving = time.monotonic() - back
        return FaultRecord(
            "PostgreSQL restart",
            at,
            serving,
            self.probe_checkout(back),
            note=f"down for {down_for_s:.1f} s; recovery measured from when it was back",
        )

    def probe_checkout(self, since: float, timeout_s: float = RECOVERY_LIMIT_S) -> float | None:
        """Seconds from `since` until a brand-new checkout is accepted again."""
        accepted = _within(
            timeout_s,
            lambda: self.server.http.post(f"/checkout/probe-{uuid.uuid4().hex}", timeout=30),
            lambda response: response.status_code in (200, 409),
        )
        return None if accepted is None else time.monotonic() - since

    def settle(self, timeout_s: float) -> None:
        """Wait until every order has finished (or the timeout passes)."""
        engine = sa.create_engine(self.database.sync_url)

        def open_orders() -> int:
            with engine.connect() as conn:
                count: int = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM orders WHERE status NOT IN "
                        "('DISPATCHED', 'CANCELLED') AND order_id NOT IN "
                        "(SELECT order_id FROM dead_letters WHERE status != 'resolved')"
                    )
                ).scalar_one()
            return count

        try:
            _within(
                timeout_s,
                open_orders,
                lambda count: count == 0,
                every=0.5,
                ignoring=(sa.exc.OperationalError,),  # PostgreSQL still coming back
            )
        finally:
            engine.dispose()

    def final_orders(self) -> dict[int, Any]:
        engine = sa.create_engine(self.database.sync_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT o.order_id, o.status, o.cancel_reason, o.payment_deadline,"
                        " p.decided_at FROM orders o"
                        " LEFT JOIN provider_payments p ON p.payment_id = o.payment_id"
                    )
                )
                return {row.order_id: row for row in rows}
        finally:
            engine.dispose()


async def random_faults(
    workdir: Path,
    *,
    checkouts: int,
    shoppers: int,
    kills: int,
    crash_buttons: int,
    pg_restarts: int,
    pg_down_s: float = 2.0,
    payment_timeout_s: float = 15.0,
    seed: int = 7,
    workers: int = 1,
) -> Report:
    report = Report(mode="random faults")
    rng = random.Random(seed)
    env = {
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": str(payment_timeout_s),
        "WIDGET_STORE_DISPATCH_S": "1",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "WIDGET_STORE_WORKERS": str(workers),
        "WIDGET_STORE_WEBHOOK_SECRET": STORM_WEBHOOK_SECRET,
    }
    with Storm(workdir, env) as storm:
        initial = storm.stock()
        # Plenty of everything but the scarce product, so most checkouts get to pay.
        storm.restock({1: 2000, 2: 2000, 3: 2000})
        load = Shoppers(
            storm.server.base_url,
            total=checkouts,
            concurrency=shoppers,
            seed=seed,
            webhook_secret=STORM_WEBHOOK_SECRET,
        )
        plan = ["kill"] * kills + ["crash"] * crash_buttons + ["postgres"] * pg_restarts
        rng.shuffle(plan)
        started = time.monotonic()

        async def inject() -> None:
            for index, kind in enumerate(plan):
                # Spread the faults over the run, at a random point of each slice.
                target = (index + rng.uniform(0.3, 1.0)) * checkouts / (len(plan) + 0.5)
                while load.started < target and not loading.done():
                    await asyncio.sleep(0.05)
                began = time.time()
                if kind == "kill":
                    record = await asyncio.to_thread(storm.kill_worker)
                elif kind == "crash":
                    record = await asyncio.to_thread(storm.press_crash_button)
                else:
                    record = await asyncio.to_thread(storm.restart_postgres, pg_down_s)
                report.faults.append(record)
                report.outages.append((began, time.time()))  # the probe checkout went through

        async def restock_the_scarce_product() -> None:
            while True:
                await asyncio.sleep(3)
                with contextlib.suppress(sa.exc.OperationalError):  # down now; next round
                    await asyncio.to_thread(storm.restock, {SCARCE_PRODUCT: 5})

        loading = asyncio.create_task(load.run())
        restocking = asyncio.create_task(restock_the_scarce_product())
        await asyncio.gather(loading, inject())
        restocking.cancel()
        await asyncio.to_thread(storm.settle, payment_timeout_s + 90)
        report.seconds = time.monotonic() - started
        _score(report, load, storm.final_orders())
        report.checks = check_invariants(storm.database.sync_url, initial, storm.restocked())
    return report


def _score(report: Report, load: Shoppers, final: dict[int, Any]) -> None:
    report.checkouts = len(load.checkouts)
    report.client_retries = load.retries
    for checkout in load.checkouts:
        counts = report.outcomes.setdefault(checkout.scenario.value, Counter())
        for problem in checkout.problems:
            report.unexpected.append(f"{checkout.scenario.value}: {problem}")
        if checkout.order_id is None:
            report.refused[checkout.refused or "no answer"] += 1
            counts[checkout.refused or "no answer"] += 1
            continue
        report.placed += 1
        if checkout.scenario not in NO_VERDICT:
            by = report.channels.setdefault(checkout.scenario.value, Counter())
            by["webhook" if checkout.channel is Channel.WEBHOOK else "page"] += 1
        order = final.get(checkout.order_id)
        outcome = "missing" if order is None else (order.cancel_reason or order.status)
        counts[outcome] += 1
        status, reason = EXPECTED[checkout.scenario]
        if order is None or order.status != status or (reason and order.cancel_reason != reason):
            what = f"order {checkout.order_id} ({checkout.scenario.value}) ended {outcome}"
            why = _outage_outlasting_the_deadline(checkout, order, report.outages)
            if outcome == TIMED_OUT and why:
                report.late.append(f"{what}: {why}")
            else:
                report.unexpected.append(what)


def _outage_outlasting_the_deadline(
    checkout: Checkout, order: Any, outages: list[tuple[float, float]]
) -> str | None:
    """Why the shopper's verdict came too late because of an outage, if it did.

    Either the shopper's own requests were retried through an outage and the verdict was
    then refused as too late (409, from the webhook or the provider's page); or the
    provider's page decided the payment before the deadline (its record says when) but
    its webhook did not land in time, and an outage (a kill, the crash button, a
    PostgreSQL restart, until new checkouts went through again) fell between the two:
    the provider redelivers an unanswered webhook every 10 s, past the deadline. Either
    way the outage made it late, and "payment timed out" is the right ending.
    """
    if checkout.outage_retries > 0 and checkout.verdict_status == 409:
        return (
            f"its verdict, held up by {checkout.outage_retries} retries through an outage,"
            f" was refused as too late ({checkout.verdict_status})"
        )
    decided, deadline = order.decided_at, order.payment_deadline
    if decided is None or deadline is None or decided >= deadline.timestamp():
        return None
    until = deadline.timestamp()
    for began, ended in outages:
        if began < until and ended > decided:
            return (
                f"the provider decided it {until - decided:.1f} s before the deadline; an outage"
                f" ({ended - began:.1f} s) in between held up the webhook past it"
            )
    return None


# --- crash right after every step -----------------------------------------------------

C = Checkpoint
FORWARD = [C.PLACE_ORDER, C.AWAIT_PAYMENT, C.SHIP_ORDER, C.DISPATCH, C.COMPLETE_DISPATCH]
# Compensations after a rejected address: the shipment (never booked), the payment
# (refunded or voided), the stock, the order.
AFTER_REJECTED_ADDRESS = [C.CANCEL_SHIPMENT, C.REFUND_PAYMENT, C.RELEASE_INVENTORY, C.CANCEL_ORDER]
# The deadline passing with no verdict (nobody pays): expire_payment decides it.
AFTER_NO_PAYMENT = [C.EXPIRE_PAYMENT]
# A failure injected into complete_dispatch: a booked shipment is cancelled too.
AFTER_FAILED_DISPATCH = [C.CANCEL_SHIPMENT]
PAYMENT_TIMEOUT_S = 8


@dataclass(frozen=True)
class CrashPoint:
    step: str
    address: str
    expect_status: str
    expect_reason: str | None
    fail_in: str | None = None
    pay: bool = True


def crash_points() -> list[CrashPoint]:
    points = [CrashPoint(s, "1 Main Street", "DISPATCHED", None) for s in FORWARD]
    points += [
        CrashPoint(s, "1 invalid street", "CANCELLED", "shipping failed")
        for s in AFTER_REJECTED_ADDRESS
    ]
    points += [
        CrashPoint(s, "1 Main Street", "CANCELLED", "payment timed out", pay=False)
        for s in AFTER_NO_PAYMENT
    ]
    points += [
        CrashPoint(s, "1 Main Street", "CANCELLED", "internal error", fail_in=C.COMPLETE_DISPATCH)
        for s in AFTER_FAILED_DISPATCH
    ]
    missing = set(CHECKOUT_CRASH_POINTS) - {point.step for point in points}
    assert not missing, f"crash points nobody tests: {missing}"
    return points


async def crash_at_every_step(workdir: Path) -> Report:
    report = Report(mode="crash after every saga step and compensation")
    env = {
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": str(PAYMENT_TIMEOUT_S),
        "WIDGET_STORE_DISPATCH_S": "0.5",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "WIDGET_STORE_FAULT_INJECTION": "1",
    }
    started = time.monotonic()
    with Storm(workdir, env) as storm:
        initial = storm.stock()
        http = storm.server.http
        for point in crash_points():
            pid = storm.server.worker_pid()
            http.post(f"/_faults/crash-after/{point.step}").raise_for_status()
            if point.fail_in:
                http.post(f"/_faults/fail-in/{point.fail_in}").raise_for_status()
            key, order_id, payment_url = await asyncio.to_thread(_place, http, point.address)
            if point.pay:
                await asyncio.to_thread(_pay, http, payment_url)
            try:
                await asyncio.to_thread(storm.server.new_worker_after, pid, 30)
                report.faults.append(FaultRecord(f"crash after {point.step}", storm.elapsed()))
            except AssertionError:
                report.unexpected.append(f"{point.step}: the app never crashed there")
            order = await asyncio.to_thread(_wait_terminal, http, order_id)
            # The order row ends before its workflow does; arming the next crash point
            # while this workflow still replays would crash it on its replay instead.
            await asyncio.to_thread(_wait_workflow_done, storm.database.sync_url, key)
            outcome = order["cancel_reason"] or order["status"]
            report.outcomes.setdefault(point.step, Counter())[outcome] += 1
            report.placed += 1
            if (
                order["status"] != point.expect_status
                or order["cancel_reason"] != point.expect_reason
            ):
                report.unexpected.append(f"crash after {point.step}: order ended {outcome}")
        storm.settle(60)
        report.checkouts = report.placed
        report.seconds = time.monotonic() - started
        report.checks = check_invariants(storm.database.sync_url, initial, {})
    return report


def _within(
    timeout_s: float,
    read: Callable[[], T],
    until: Callable[[T], object],
    *,
    every: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = NOT_YET,
) -> T | None:
    """`eventually`, for the harness's measurements: None if it never held (the report
    shows it) rather than an error that would end the storm."""
    try:
        return eventually(read, until, timeout=timeout_s, every=every, ignoring=ignoring)
    except AssertionError:
        return None


def _retry(send: Callable[[], httpx.Response], *, timeout: float = 60) -> httpx.Response:
    return eventually(
        send,
        lambda response: response.status_code not in (502, 503, 504),
        timeout=timeout,
        what="the store answering",
    )


def _place(http: httpx.Client, address: str) -> tuple[str, int, str]:
    key = f"crash-{uuid.uuid4().hex}"
    body = {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": address}
    response = _retry(lambda: http.post(f"/checkout/{key}", json=body))
    response.raise_for_status()
    reply = response.json()
    return key, reply["order_id"], reply["payment_url"]


def _wait_workflow_done(url: str, workflow_id: str, timeout: float = 60) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def status() -> str | None:
        with engine.connect() as conn:
            found: str | None = conn.execute(
                sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :id"),
                {"id": workflow_id},
            ).scalar()
        return found

    try:
        eventually(
            status,
            lambda found: found == "SUCCESS",
            timeout=timeout,
            what=f"workflow {workflow_id} finishing",
        )
    finally:
        engine.dispose()


def _pay(http: httpx.Client, payment_url: str) -> None:
    _retry(lambda: http.post(f"{payment_url}/pay"))


def _wait_terminal(http: httpx.Client, order_id: int, timeout: float = 60) -> dict[str, Any]:
    response = eventually(
        lambda: http.get(f"/order/{order_id}"),
        lambda response: response.status_code == 200 and response.json()["status"] in TERMINAL,
        timeout=timeout,
        every=0.1,
        what=f"order {order_id} finishing",
    )
    order: dict[str, Any] = response.json()
    return order


def save(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
