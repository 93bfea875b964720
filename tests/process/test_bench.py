"""The benchmarks' smoke run, so they never rot: seconds of each, no targets checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from widget_store.config import PROJECT_ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("postgres_server_binaries")]


def test_the_benchmark_smoke_run_measures_every_scenario(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "smoke", "--results", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    throughput = json.loads((tmp_path / "smoke-throughput.json").read_text())
    assert [level["shoppers"] for level in throughput["levels"]] == [1, 4]
    assert all(level["purchases"] > 0 and level["errors"] == 0 for level in throughput["levels"])
    assert all(level["commits_per_purchase"] for level in throughput["levels"])
    assert (tmp_path / "smoke-throughput.png").stat().st_size > 1000
    recovery = json.loads((tmp_path / "recovery.json").read_text())
    assert recovery["serving_s"] > 0 and recovery["resumed_s"] is not None
    waiting = json.loads((tmp_path / "waiting-20.json").read_text())
    assert waiting["waiting"] == 20 and waiting["drained_per_s"] > 0
    assert waiting["idle_turns"] and waiting["waiting_turns"], "in turns with a control store"
    assert "Targets:" in result.stdout
    cost = json.loads((tmp_path / "smoke-observability.json").read_text())
    (level,) = cost["levels"]
    assert level["shoppers"] == 2 and level["off"] and level["on"]
    assert all(run["purchases"] > 0 and run["errors"] == 0 for run in level["off"] + level["on"])
    assert 0 < cost["per_operation"]["per_purchase_us"] < 10_000
    relay = json.loads((tmp_path / "smoke-relay.json").read_text())
    (level,) = relay["levels"]
    assert level["shoppers"] == 2 and level["off"] and level["on"]
    assert all(run["purchases"] > 0 and run["errors"] == 0 for run in level["off"] + level["on"])
    assert "purchases/s relaying vs not" in result.stdout
    clients = json.loads((tmp_path / "smoke-client.json").read_text())
    assert [turn["client"] for turn in clients["turns"]] == ["httpx", "aiohttp"]
    assert all(t["purchases"] > 0 and t["client_cpu_ms_per_purchase"] > 0 for t in clients["turns"])


def test_the_side_by_side_benchmark_against_version_0_1_runs_in_turns(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "versus", "--smoke", "--results", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    versus = json.loads((tmp_path / "smoke-versus.json").read_text())
    assert versus["baseline"].startswith("67e32ed")
    runs = versus["runs"]
    assert {run["store"] for run in runs} == {"old", "new"}
    assert {(run["workers"], run["shoppers"]) for run in runs} == {(1, 1), (1, 2), (2, 4)}
    assert all(run["purchases"] > 0 and run["cpu_ms_per_purchase"] for run in runs)
    assert versus["floor"]["cpu_ms_per_step"] > 0
    for run in runs:  # each turn's workflows, by the app process that ran them
        split = run["workflows_by_worker"]
        assert split is not None and sum(split.values()) >= run["purchases"], run
    figures = {figure["label"]: figure for figure in versus["figures"]}
    assert figures["sequential checkout call p50"]["target"] == "≤ 0.4x"
    assert all(
        figure["old"] is not None and figure["new"] is not None for figure in figures.values()
    )
    assert "| sequential checkout call p50 |" in result.stdout
