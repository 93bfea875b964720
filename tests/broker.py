"""A private NATS server with JetStream for the broker tests, and looks at its stream.

Each test gets its own `nats-server` on a free port with its store in a temp dir, so it
can be stopped and killed without touching the machine's shared server.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import Header
from nats.js.errors import NotFoundError

from tests.server import free_port
from widget_store.events import Event, decode
from widget_store.jetstream import STREAM

DEFAULT_BINARY = Path("/usr/sbin/nats-server")


def nats_server_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    return str(DEFAULT_BINARY) if DEFAULT_BINARY.exists() else None


class NatsServer:
    """`nats-server -js` on loopback; keeps its port and store across restarts."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = directory / "jetstream"
        self.log_path = directory / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        command += ["-sd", str(self.store), "-l", str(self.log_path)]
        ready_before = self.log().count("Server is ready")
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while self.log().count("Server is ready") == ready_before:
            if self._process.poll() is not None:
                raise AssertionError(f"nats-server exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nats-server did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM), as an operator would."""
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(how)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class StreamMessage:
    subject: str
    msg_id: str | None
    event: Event


async def stream_messages(url: str) -> list[StreamMessage]:
    """Every message in the store's stream, in stream order, with its Nats-Msg-Id."""
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        try:
            state = (await js.stream_info(STREAM)).state
        except NotFoundError:
            return []
        messages = []
        for seq in range(state.first_seq, state.last_seq + 1):
            raw = await js.get_msg(STREAM, seq)
            headers = raw.headers or {}
            messages.append(
                StreamMessage(
                    str(raw.subject), headers.get(Header.MSG_ID.value), decode(raw.data or b"")
                )
            )
        return messages
    finally:
        await client.close()


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Wait until `check()` (plain or async) is true, polling every 50 ms; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await _truth(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _truth(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)
