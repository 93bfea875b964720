"""The alert rules and the example scrape config: valid, and each rule fires when it must
and stays quiet when it must (`promtool test rules`, cases in deploy/prometheus/)."""

from __future__ import annotations

import subprocess

from tests.conftest import PrometheusBinaries
from widget_store.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"


def promtool(binaries: PrometheusBinaries, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.promtool), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120
    )


def test_the_example_config_and_its_rules_are_valid(
    prometheus_binaries: PrometheusBinaries,
) -> None:
    result = promtool(prometheus_binaries, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout + result.stderr


def test_every_alert_fires_when_it_must_and_only_then(
    prometheus_binaries: PrometheusBinaries,
) -> None:
    result = promtool(prometheus_binaries, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == fires == quiet, (alerts, fires, quiet)
