"""For the broker tests: a private NATS server, the outbox, the stream, the projection.

Each test gets its own `nats-server` on a free port with its store in a temp dir, so it
can be stopped and killed without touching the machine's shared server.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import sqlalchemy as sa
from nats.js.api import Header
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.helpers import eventually, eventually_async
from tests.server import free_port
from widget_store import queries
from widget_store.config import Database
from widget_store.consumer import order_projection, projection_metadata
from widget_store.events import Aggregate, Event, decode
from widget_store.jetstream import STREAM, JetStreamBroker
from widget_store.relay import Relay

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
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"nats-server exited:\n{self.log()}")
            return self.log().count("Server is ready") > ready_before

        eventually(ready, timeout=timeout, what=lambda: f"nats-server starting:\n{self.log()}")

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


# --- the outbox side -----------------------------------------------------------------

# An order's life as the saga logs it, dispatched at the end.
LIFE = [
    "CreateOrder_ok",
    "ReserveInventory_ok",
    "OpenPayment_ok",
    "ChargePayment_ok",
    "CreateShipment_ok",
    "Dispatch_started",
    "Dispatch_ok",
    "checkout_complete",
]


def async_url(database_url: str) -> str:
    return Database.parse(database_url).async_url


@asynccontextmanager
async def store_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def write_events(engine: AsyncEngine, orders: range, steps: list[str]) -> list[str]:
    """Each order's steps, interleaved across orders, one transaction per event."""
    ids = []
    for step in steps:
        for order_id in orders:
            async with engine.begin() as conn:
                event_id = await queries.add_event(
                    conn, order_id=order_id, type=step, payload={"step": step}, at=queries.utcnow()
                )
            ids.append(event_id)
    return ids


async def unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await queries.outbox_lag(conn, queries.utcnow())).unsent


def relay_for(database_url: str, nats_url: str, name: str = "relay-test", **kw: float) -> Relay:
    return Relay(
        async_url(database_url),
        lambda: JetStreamBroker.connect(nats_url, name=name),
        name=name,
        poll_s=kw.pop("poll_s", 0.05),
        takeover_s=kw.pop("takeover_s", 0.2),
    )


@asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.wait([task])


async def drained(engine: AsyncEngine, timeout: float = 20.0) -> None:
    async def done() -> bool:
        return await unsent(engine) == 0

    await eventually_async(done, timeout=timeout, what="the outbox draining")


# --- the consumer side ----------------------------------------------------------------

CANCELLED_LIFE = ["CreateOrder_ok", "ReserveInventory_failed", "CancelOrder", "checkout_failed"]


def event(order_id: int, seq: int, type: str, **payload: Any) -> Event:
    return Event(
        event_id=str(uuid.uuid4()),
        aggregate=Aggregate.ORDER,
        aggregate_id=order_id,
        seq=seq,
        type=type,
        at=datetime.now(UTC),
        payload=payload,
    )


def lives(orders: dict[int, Sequence[str]]) -> list[Event]:
    """Each order's events numbered 1, 2, ..., interleaved across orders."""
    numbered = {o: [event(o, n, t) for n, t in enumerate(types, 1)] for o, types in orders.items()}
    longest = max(len(events) for events in numbered.values())
    return [e[i] for i in range(longest) for e in numbered.values() if i < len(e)]


@asynccontextmanager
async def projection(path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.run_sync(projection_metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


async def rows(engine: AsyncEngine) -> dict[int, tuple[str | None, int, int]]:
    """order ID -> (status, events applied, last sequence)."""
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(order_projection))
        return {row.order_id: (row.status, row.events, row.last_seq) for row in result}
