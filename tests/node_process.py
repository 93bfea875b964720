"""`widget-store node` in a subprocess: lines in on its stdin, lines out of its stdout."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from tests.server import widget_store_command
from widget_store.config import Database

# Starting is importing, migrating (a no-op on a migrated file) and launching DBOS: a few
# seconds on a loaded machine. The seed's 5 s are for the messages once the node is up.
START_S = 60.0
SEED_TIMEOUT_S = 5.0
ORCHESTRATOR = "checkout_orchestrator"


def envelope(src: str, body: dict[str, Any], dest: str = ORCHESTRATOR) -> str:
    return json.dumps({"src": src, "dest": dest, "body": body}, separators=(",", ":"))


def checkout(
    msg_id: int,
    saga_id: str,
    *items: tuple[str, int],
    user_id: str = "u42",
    address: str = "123 Main St",
    src: str = "c1",
) -> str:
    body = {
        "type": "checkout",
        "msg_id": msg_id,
        "saga_id": saga_id,
        "user_id": user_id,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
        "shipping_address": address,
    }
    return envelope(src, body)


class NodeProcess:
    """One run of the node; its stdout is read line by line by a thread."""

    def __init__(self, database_url: str, log: Path, *args: str, faults: bool = False) -> None:
        env = {
            **os.environ,
            "WIDGET_STORE_DATABASE_URL": database_url,
            "WIDGET_STORE_LOG_LEVEL": "WARNING",
        }
        if faults:
            env["WIDGET_STORE_FAULT_INJECTION"] = "1"
        self._log = log
        self._stderr = log.open("ab")
        self.process = subprocess.Popen(
            [*widget_store_command(), "node", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(b"")  # the end

    def send(self, *lines: str | bytes) -> None:
        assert self.process.stdin is not None
        for line in lines:
            raw = line.encode() if isinstance(line, str) else line
            self.process.stdin.write(raw + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def next_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; log:\n{self.log()}") from None
        if not line:
            raise AssertionError(f"the node ended its output; log:\n{self.log()}")
        return line.decode().rstrip("\n")

    def rest(self, timeout: float) -> list[dict[str, Any]]:
        """Every line until the node exits (it does once its input ends and its sagas do)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"the node was still running after {timeout} s:\n{self.log()}"
            ) from None
        self._reader.join()
        lines = []
        while (line := self._lines.get_nowait()) != b"":
            lines.append(json.loads(line))
        return lines

    def log(self) -> str:
        self._stderr.flush()
        return self._log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self._stderr.close()


def run_node(
    database_url: str,
    log: Path,
    lines: Iterable[str | bytes],
    *args: str,
    faults: bool = False,
    timeout: float = START_S,
) -> tuple[list[dict[str, Any]], int]:
    """Feed the lines, close the input; every output line, parsed, and the exit code."""
    node = NodeProcess(database_url, log, *args, faults=faults)
    try:
        node.send(*lines)
        node.close()
        output = node.rest(timeout)
        return output, node.process.returncode
    finally:
        node.stop()


def bodies(output: Iterable[Mapping[str, Any]], saga_id: str | None = None) -> list[dict[str, Any]]:
    """The bodies of the output, of one saga's messages if `saga_id` is given."""
    return [
        dict(m["body"]) for m in output if saga_id is None or m["body"].get("saga_id") == saga_id
    ]


def types(output: Iterable[Mapping[str, Any]], saga_id: str | None = None) -> list[str]:
    return [body["type"] for body in bodies(output, saga_id)]


def query(database_url: str, statement: str) -> list[Any]:
    engine = sa.create_engine(Database.parse(database_url).sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(statement)))
    finally:
        engine.dispose()
