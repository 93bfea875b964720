"""With several workers, kept-alive connections are recycled, so they spread over them.

The workers share one listening socket, and the one that wakes first accepts every
connection waiting: a pool opened in a burst could land whole on one worker and stay
there (seen in two runs of six at 32 shoppers on two workers). Past its lifetime, a
connection answers its next request in full with `connection: close`; the client
reconnects, and the reconnections are spread over the workers. One worker has nobody to
spread to and keeps its connections.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, running_server

LIFETIME_S = 1.0  # WIDGET_STORE_CONNECTION_MAX_AGE_S: each connection lives 0.5-1 s
CONNECTIONS = 32
TRAFFIC_S = 4.0
REQUEST = b"GET /products/1 HTTP/1.1\r\nhost: store\r\n\r\n"


@pytest.fixture
def two_workers(postgres_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "WIDGET_STORE_DATABASE_URL": postgres_url,
        "WIDGET_STORE_WORKERS": "2",
        "WIDGET_STORE_CONNECTION_MAX_AGE_S": str(LIFETIME_S),
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def one_worker(sqlite_template: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    database = tmp_path / "store.sqlite"
    shutil.copy(sqlite_template, database)
    env = {
        "WIDGET_STORE_DATABASE_URL": f"sqlite:///{database}",
        "WIDGET_STORE_CONNECTION_MAX_AGE_S": str(LIFETIME_S),
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
    }
    with running_server(env, tmp_path / "server.log") as server:
        yield server


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, str]:
    """One request on an open connection; the answer's status line, headers and body."""
    writer.write(REQUEST)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head.decode().strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (x.split(":", 1) for x in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return {"status": status, **headers, "body": body.decode()}


async def two_requests_apart(
    port: int, apart_s: float
) -> tuple[dict[str, str], dict[str, str], bytes]:
    """Two requests on one connection, `apart_s` apart; then what the server sends next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        first = await ask(reader, writer)
        await asyncio.sleep(apart_s)
        second = await ask(reader, writer)
        after = await asyncio.wait_for(reader.read(1), 2)  # b"": the server closed it
        return first, second, after
    finally:
        writer.close()


def test_a_connection_past_its_lifetime_is_answered_in_full_and_then_closed(
    two_workers: ServerProcess,
) -> None:
    first, second, after = asyncio.run(two_requests_apart(two_workers.port, LIFETIME_S + 0.3))

    assert first["status"] == "HTTP/1.1 200 OK"
    assert first.get("connection") != "close"
    assert second["status"] == "HTTP/1.1 200 OK"
    assert '"price_cents"' in second["body"]
    assert second["connection"] == "close"
    assert after == b""


def test_one_worker_keeps_its_connections_past_the_lifetime(one_worker: ServerProcess) -> None:
    async def scenario() -> tuple[dict[str, str], dict[str, str]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", one_worker.port)
        try:
            first = await ask(reader, writer)
            await asyncio.sleep(LIFETIME_S + 0.3)
            return first, await ask(reader, writer)
        finally:
            writer.close()

    first, second = asyncio.run(scenario())

    assert first.get("connection") != "close"
    assert second["status"] == "HTTP/1.1 200 OK"
    assert second.get("connection") != "close"


def workers_of(server: ServerProcess, count: int = 2, timeout_s: float = 30) -> list[int]:
    """The gunicorn master's worker processes, once all `count` have started."""
    assert server.pid is not None
    deadline = time.monotonic() + timeout_s
    while True:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        if len(children) >= count or time.monotonic() > deadline:
            return [int(pid) for pid in children]
        time.sleep(0.1)


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def server_side_inodes(server_port: int, client_ports: set[int]) -> dict[int, str]:
    """The server's end of each client connection: client port -> socket inode."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port:
            client_port = int(remote.split(":")[1], 16)
            if client_port in client_ports:
                found[client_port] = inode
    return found


async def clients_kept_busy(port: int) -> tuple[dict[int, asyncio.StreamWriter], int]:
    """`CONNECTIONS` clients, opened at once, each asking in a loop and reconnecting when
    told to. Returns the connections left open at the end (by local port), and how many
    were opened in all."""
    opened = 0
    left_open: dict[int, asyncio.StreamWriter] = {}
    stop_at = time.monotonic() + TRAFFIC_S

    async def client() -> None:
        nonlocal opened
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened += 1
            while (await ask(reader, writer)).get("connection") != "close":
                if time.monotonic() >= stop_at:
                    left_open[writer.get_extra_info("sockname")[1]] = writer
                    return
                await asyncio.sleep(0.05)
            writer.close()

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    return left_open, opened


def test_a_pool_opened_at_once_ends_up_spread_over_both_workers(
    two_workers: ServerProcess,
) -> None:
    workers = workers_of(two_workers)
    assert len(workers) == 2

    async def scenario() -> tuple[Counter[int], int]:
        left_open, opened = await clients_kept_busy(two_workers.port)
        try:
            inodes = server_side_inodes(two_workers.port, set(left_open))
            held = {pid: socket_inodes(pid) for pid in workers}
            owners = Counter(
                pid for inode in inodes.values() for pid in workers if inode in held[pid]
            )
        finally:
            for writer in left_open.values():
                writer.close()
        return owners, opened

    owners, opened = asyncio.run(scenario())

    assert opened > CONNECTIONS  # every connection was recycled at least once
    assert sum(owners.values()) == CONNECTIONS
    assert min(owners[pid] for pid in workers) >= CONNECTIONS // 4, owners
