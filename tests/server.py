"""`widget-store serve` in a subprocess, the way a user runs it, for tests that crash it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def widget_store_command() -> list[str]:
    script = Path(sys.executable).with_name("widget-store")
    return [str(script)] if script.exists() else [sys.executable, "-m", "widget_store.cli"]


class ServerProcess:
    """`widget-store serve`, or the same command from another checkout (`source`: the
    folder an older version was extracted to, run with this venv, or with `python`, the
    interpreter of a venv of its own)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        source: Path | None = None,
        port: int | None = None,
        python: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = {**os.environ, **env}
        self._cwd = source
        self._python = python or Path(sys.executable)
        if source is not None:
            self._env["PYTHONPATH"] = str(source)  # ahead of the editable install's path
        self._process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def setting(self, name: str) -> str | None:
        """The value of a WIDGET_STORE_* variable the server was started with."""
        return self._env.get(name)

    @property
    def pid(self) -> int | None:
        """The supervisor's (gunicorn master's) process ID."""
        return self._process.pid if self._process else None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            command = [*widget_store_command(), "serve", "--port", str(self.port)]
            if self._cwd is not None:
                command = [str(self._python), "-m", "widget_store.cli", *command[-3:]]
            self._process = subprocess.Popen(
                command,
                cwd=self._cwd,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def worker_pid(self, timeout: float = 60.0) -> int:
        """Wait until the app serves, and return the pid of the worker that answered."""

        def healthz() -> httpx.Response:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"widget-store serve exited:\n{self.log()}")
            return self.http.get("/healthz", timeout=2)

        answer = eventually(
            healthz,
            lambda response: response.status_code == 200,
            timeout=timeout,
            what=lambda: f"widget-store serve answering:\n{self.log()}",
        )
        pid: int = answer.json()["pid"]
        return pid

    def kill_worker(self) -> int:
        """kill -9 the app process, and return the pid of the one the supervisor starts."""
        pid = self.worker_pid()
        os.kill(pid, signal.SIGKILL)
        return self.new_worker_after(pid)

    def press_crash_button(self) -> int:
        """POST /crash_application, and return the pid of the replacement app process."""
        pid = self.worker_pid()
        response = self.http.post("/crash_application")
        assert response.status_code == 202, response.text
        return self.new_worker_after(pid)

    def new_worker_after(self, old_pid: int, timeout: float = 60.0) -> int:
        return eventually(
            lambda: self.worker_pid(timeout),
            lambda pid: pid != old_pid,
            timeout=timeout,
            every=0.02,
            what=lambda: f"worker {old_pid} replaced:\n{self.log()}",
        )

    def kill(self) -> None:
        """kill -9 the supervisor and every worker at once, the way a machine goes down."""
        self.http.close()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.http.close()
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()


@contextmanager
def running_server(env: Mapping[str, str], log_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(env, log_path)
    server.start()
    try:
        server.worker_pid()
        yield server
    finally:
        server.stop()
