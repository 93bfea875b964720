"""The README stays true: its commands are the ones CI runs, its table lists every setting."""

from __future__ import annotations

import re

from widget_store.config import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", README)


def test_the_first_command_starts_the_store_and_the_second_runs_the_tests() -> None:
    serve, tests = readme_commands()[:2]
    assert serve.endswith("widget-store serve")
    assert tests.endswith("pytest")


def test_ci_runs_the_readmes_test_command() -> None:
    test_command = readme_commands()[1]
    assert test_command in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()


def test_every_setting_the_code_reads_is_in_the_settings_table() -> None:
    sources = [
        *(PROJECT_ROOT / "widget_store").rglob("*.py"),
        PROJECT_ROOT / "tests" / "conftest.py",
    ]
    read = {
        name
        for source in sources
        for name in re.findall(r"\"(WIDGET_STORE_[A-Z_]+)\"", source.read_text())
    }
    documented = set(re.findall(r"^\| `(WIDGET_STORE_[A-Z_]+)` \|", README, re.MULTILINE))
    assert read, "found the settings the code reads"
    assert read == documented


def test_every_screenshot_the_readme_shows_is_committed() -> None:
    images = re.findall(r"\]\((docs/screenshots/[^)]+\.png)\)", README)
    assert len(images) >= 5
    missing = [image for image in images if not (PROJECT_ROOT / image).is_file()]
    assert not missing
