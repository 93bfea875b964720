"""The trip benchmark's smoke run on Temporal for real, so it never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.temporal_trip import server as temporal_server
from widget_store.config import PROJECT_ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("postgres_server_binaries")]


def smoke_run(side: str, results: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`python -m bench trips --smoke` for one side; its output and that side's figures."""
    command = [sys.executable, "-m", "bench", "trips", "--smoke", "--only", side]
    result = subprocess.run(
        [*command, "--results", str(results)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((results / "trips-smoke.json").read_text())["systems"][side]
    return result, figures


def test_the_smoke_run_measures_temporal_end_to_end(tmp_path: Path) -> None:
    if temporal_server.missing():
        pytest.skip(str(temporal_server.missing()))
    result, temporal = smoke_run("temporal", tmp_path)
    assert temporal["skipped"] is None and temporal["checks_failed"] == []
    assert [level for level in temporal["turns"]] == ["1", "8", "32"]
    assert all(
        turn["trips"] > 0 and turn["errors"] == 0
        for turns in temporal["turns"].values()
        for turn in turns
    )
    (kill,) = temporal["kills"]
    assert kill["in_flight"] > 0 and kill["finished_s"] is not None
    assert temporal["counts"]["duplicates"] == 0
    assert temporal["counts"]["disagreeing_trips"] == 0
    assert "duplicate side effects" in result.stdout


def test_the_smoke_run_measures_the_store_side_end_to_end(tmp_path: Path) -> None:
    _, store = smoke_run("store", tmp_path)
    assert store["skipped"] is None and store["checks_failed"] == []
    assert [level for level in store["turns"]] == ["1", "8", "32"]
    assert all(
        turn["trips"] > 0 and turn["errors"] == 0 and turn["unexpected"] == 0
        for turns in store["turns"].values()
        for turn in turns
    )
    (kill,) = store["kills"]
    assert kill["in_flight"] > 0 and kill["finished_s"] is not None and kill["errors"] == 0
    assert store["counts"]["duplicates"] == 0
    assert store["counts"]["disagreeing_trips"] == 0
    assert len(store["services_alone_p50_ms"]) == 1


def test_with_two_store_workers_the_kill_stops_both_and_both_come_back() -> None:
    import asyncio

    from bench.metrics import leaf_processes
    from bench.trip_store import StoreTrips

    async def kill() -> tuple[set[int], set[int]]:
        store = StoreTrips(workers=2)
        await store.start()
        try:
            supervisor = store._store.server.pid if store._store else None
            assert supervisor is not None
            before = set(leaf_processes(supervisor))
            await store.kill_worker()
            return before, set(leaf_processes(supervisor))
        finally:
            await store.stop()

    before, after = asyncio.run(kill())
    assert len(before) == 2 and len(after) == 2
    assert not before & after, "every worker that held trips was killed"
