"""Clients that trickle a request are cut off; everyone else is served meanwhile.

300 clients each sending a byte every half second (the headers of a GET, or the body of
a POST whose headers arrived) were once never disconnected. Against the real server,
with a 2 s request-read deadline, each is closed within the bound, with a 408 when
nothing had been answered, while ordinary requests keep their ordinary latency. Past the
connection limit, a connection is refused with 503 at once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, running_server

READ_TIMEOUT_S = 2.0
SLOW_CLIENTS = 300
TRICKLE_EVERY_S = 0.5
# The deadline, plus the time a loaded two-core machine takes to notice it.
CUT_OFF_WITHIN_S = READ_TIMEOUT_S + 2.5


@pytest.fixture
def serve(sqlite_template: Path, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `widget-store serve` with these settings, on a copy of the template database."""
    with ExitStack() as stack:

        def start(**settings: str) -> ServerProcess:
            name = f"store-{len(stack._exit_callbacks)}"
            database = tmp_path / f"{name}.sqlite"
            shutil.copy(sqlite_template, database)
            env = {
                "WIDGET_STORE_DATABASE_URL": f"sqlite:///{database}",
                "WIDGET_STORE_LOG_LEVEL": "WARNING",
                "WIDGET_STORE_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
                **settings,
            }
            return stack.enter_context(running_server(env, tmp_path / f"{name}.log"))

        yield start


async def trickle(port: int, prefix: bytes, trickled: bytes) -> tuple[float, bytes]:
    """Send `prefix` at once, then `trickled` a byte at a time; return how long the server
    kept the connection, and what it said before closing it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    answer = b""
    try:
        writer.write(prefix)
        for byte in trickled:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY_S)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk:
                break
            answer += await reader.read()  # the rest, up to the close
            break
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - opened, answer


# Half the slow clients trickle their headers, half a body after prompt headers.
HEADERS_TRICKLED = (
    b"",
    b"GET /products HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n",
)
BODY_TRICKLED = (
    b"POST /checkout/slow-body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 300\r\n\r\n",
    b" " * 300,
)


def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve()

    async def scenario() -> tuple[list[tuple[float, bytes]], list[float]]:
        slow = [
            asyncio.create_task(
                trickle(server.port, *(HEADERS_TRICKLED if n % 2 else BODY_TRICKLED))
            )
            for n in range(SLOW_CLIENTS)
        ]
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            while not all(task.done() for task in slow):
                started = time.monotonic()
                response = await client.get("/products", headers={"Connection": "close"})
                assert response.status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.1)
        return [task.result() for task in slow], latencies

    slow, latencies = asyncio.run(scenario())

    for held_s, answer in slow:
        assert held_s < CUT_OFF_WITHIN_S, f"a slow client was held {held_s:.1f} s"
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"did not arrive within 2 s" in answer
    assert len(latencies) >= 5
    assert max(latencies) < 2.0, f"normal requests waited up to {max(latencies):.2f} s"
    assert server.http.get("/healthz").status_code == 200


def test_past_the_connection_limit_a_connection_is_refused_at_once(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve(WIDGET_STORE_MAX_CONNECTIONS="20")

    async def scenario() -> tuple[bytes, float, int]:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        # Read before asking: the server answers and closes at once, and a request
        # written after its close would only meet a reset.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        refused = await asyncio.wait_for(reader.read(), 5)
        refused_after = time.monotonic() - started
        writer.close()
        # The idle ones run out of time; then there is room again.
        for _, idle_writer in idle:
            idle_writer.close()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            later = await client.get("/healthz")
        return refused, refused_after, later.status_code

    refused, refused_after, later = asyncio.run(scenario())

    assert refused.startswith(b"HTTP/1.1 503 "), refused[:80]
    assert b"retry-after: 1" in refused.lower()
    assert b"too many connections" in refused
    assert refused_after < 1.0
    assert later == 200


def test_an_idle_connection_that_never_sends_a_byte_is_closed(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve()

    async def scenario() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        opened = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return time.monotonic() - opened, answer

    held_s, answer = asyncio.run(scenario())
    assert held_s < CUT_OFF_WITHIN_S
    assert answer == b"", "nothing was asked, so nothing is answered"
