"""An earlier commit of the store, built to be served beside this one.

Its source comes out of this repository's history (`git archive`), and it gets a venv of
its own with what its own `pyproject.toml` asks for, so it runs as it ran then rather
than on this version's dependencies. A build is kept under the temporary folder, keyed
by the commit, so a second run (or the test suite's smoke run) starts at once; a lock
file lets two runs share one build.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from widget_store.config import PROJECT_ROOT

# The store before issue 10's work: version 0.1 (tests/process/test_upgrade.py too).
BASELINE_COMMIT = "67e32ed"


@dataclass(frozen=True)
class Build:
    commit: str  # the full hash
    source: Path  # the extracted tree: `widget-store serve` runs from here
    python: Path  # its venv's interpreter

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def webhook_names_payment(self) -> bool:
        """Whether this version's signed webhook body names the payment and the verdict
        (version 0.1's held only the event and the amount, and refused anything more)."""
        models = (self.source / "widget_store" / "api" / "models.py").read_text()
        webhook_in = models.split("class WebhookIn", 1)[-1].split("\nclass ", 1)[0]
        return "payment_id" in webhook_in

    @property
    def watches_status(self) -> bool:
        """Whether this version's order long poll can wait for a status change
        (`after_status`; version 0.1's waited only for more log entries)."""
        return "after_status" in (self.source / "widget_store" / "api" / "orders.py").read_text()


def resolve(commit: str) -> str:
    """The full hash of `commit` in this repository."""
    result = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def current_label() -> str:
    """This checkout's short hash, marked when its files differ from it."""
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short=7", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{head}+changes" if dirty else head


def build(commit: str = BASELINE_COMMIT, root: Path | None = None) -> Build:
    """The store at `commit`, extracted and installed in a venv of its own (once)."""
    full = resolve(commit)
    folder = root or Path(tempfile.gettempdir()) / f"widget-store-build-{full[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    source, venv = folder / "source", folder / "venv"
    built = Build(full, source, venv / "bin" / "python")
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
        marker = folder / "built"
        if marker.exists() and marker.read_text() == full and built.python.exists():
            return built
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "archive", full], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        shutil.rmtree(source / "tests", ignore_errors=True)  # only the store itself
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run(
            [str(built.python), "-m", "pip", "install", "--quiet", str(source)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"installing {full[:7]} failed:\n{installed.stderr[-3000:]}")
        marker.write_text(full)
    return built
