"""Chaos, short enough for CI: every kind of fault at least once, and not one invariant broken.

The full storm (1,000 checkouts, a dozen app kills, two PostgreSQL restarts) is
`python -m tests.chaos`; see the README.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.chaos.run import crash_at_every_step, crash_points, random_faults
from tests.chaos.shoppers import NO_VERDICT, WEIGHTS

pytestmark = pytest.mark.usefixtures("postgres_server_binaries")


def test_crashing_right_after_every_step_and_compensation_loses_nothing(tmp_path: Path) -> None:
    report = asyncio.run(crash_at_every_step(tmp_path))
    print(report.render())

    crashed = {fault.kind.removeprefix("crash after ") for fault in report.faults}
    assert crashed == {point.step for point in crash_points()}, "every point was reached"
    assert report.unexpected == []
    assert report.violations == 0


def test_a_short_storm_of_every_kind_of_fault_breaks_no_invariant(tmp_path: Path) -> None:
    report = asyncio.run(
        random_faults(tmp_path, checkouts=150, shoppers=32, kills=1, crash_buttons=1, pg_restarts=1)
    )
    print(report.render())

    assert {fault.kind for fault in report.faults} == {
        "kill -9 of the app process",
        "crash button",
        "PostgreSQL restart",
    }
    assert all(fault.checkout_after_s is not None for fault in report.faults)
    assert report.placed > 100
    assert report.direct_share >= 1 / 3, "a third of verdicts come by a direct webhook"
    paying_kinds = {kind.value for kind in WEIGHTS if kind not in NO_VERDICT}
    paid_directly = {kind for kind, by in report.channels.items() if by.get("webhook")}
    assert paid_directly == paying_kinds, "every kind of shopper paid by webhook at least once"
    assert [u for u in report.unexpected if "webhook answered" in u] == []
    assert report.violations == 0
