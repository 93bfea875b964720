"""The HTTP server's own limits: how long a request may take to arrive, how many connections.

uvicorn times out a kept-alive connection only while it is silent, and not at all before
its first request: a client that sends a byte every few seconds holds its connection,
and a worker's memory and file descriptors, forever (300 such clients were never
disconnected). An ASGI middleware cannot help with the headers, since the app sees a
request only once they are complete. So the bound lives in the protocol:

- **A request-read deadline.** From the moment a connection opens, or its previous
  response ends, the next request (headers and body) must have arrived within
  `WIDGET_STORE_REQUEST_READ_TIMEOUT_S`. Otherwise the client gets 408 (if nothing was
  answered yet) and the connection is closed. A long poll is not affected: once the
  request has arrived, the app takes the time it takes.
- **A connection limit.** A process holds at most `WIDGET_STORE_MAX_CONNECTIONS`; one
  more is answered 503 with `Retry-After` and closed at once, before it can hold
  anything. uvicorn's own `limit_concurrency` is not used: it answers 503 to *requests*
  once the connections are full, so slow clients would lock out everyone else, and it
  never refuses a connection.
- **Header size.** h11 refuses (400) a request whose headers pass `MAX_HEADER_BYTES`.
- An idle kept-alive connection is closed after gunicorn's `keepalive` (5 s).
- **A connection lifetime, with several workers.** The workers share one listening
  socket, and whichever wakes first accepts every connection waiting: a client that
  opens its pool in a burst (a reverse proxy, a load generator) can land all of it on
  one worker and keep it there, while the other idles. Measured with 32 shoppers on two
  workers, that happened in two runs of six: one worker took every purchase, and its
  purchases waited on its connection pool. So a connection older than its lifetime
  (drawn between half and all of `WIDGET_STORE_CONNECTION_MAX_AGE_S`, so that a pool
  opened at once does not reconnect at once) answers its next request with
  `connection: close`, and the client reconnects; the least busy worker is the one
  most likely to be waiting in `accept`. The close rides on a response, so no request
  is ever cut off. One worker keeps its connections.

The protocol is uvicorn's h11 implementation with these additions; h11 rather than
httptools, because the limits are written against its states, and parsing is not what
a checkout spends its time on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

from widget_store.config import Settings

log = logging.getLogger("widget_store.serving")

MAX_HEADER_BYTES = 16 * 1024
# Under a flood of refused connections, say so at most this often.
WARN_EVERY_S = 10.0
READING = (h11.IDLE, h11.SEND_BODY)  # the client's side of a request not yet complete


def _raw_response(status: int, reason: str, detail: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n".encode()
        + extra
        + f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-read deadline, a connection limit and a
    connection lifetime."""

    read_timeout_s: float = 15.0
    max_connections: int = 1000
    max_age_s: float = 0.0  # 0: a kept-alive connection lives as long as its client wants
    _last_warning = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        lifetime = random.uniform(0.5, 1.0) * self.max_age_s if self.max_age_s > 0 else math.inf
        self._retire_at = time.monotonic() + lifetime

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._warn(f"refused a connection: {self.max_connections} are open already")
            detail = "the store has too many connections open; try again shortly"
            self.transport.write(
                _raw_response(503, "Service Unavailable", detail, b"retry-after: 1\r\n")
            )
            self.transport.close()
            return
        self._review_read_deadline()

    def data_received(self, data: bytes) -> None:
        answering = self.cycle
        super().data_received(data)
        if self.cycle is not answering and self.cycle is not None:  # a request arrived
            self._retire_if_old()
        self._review_read_deadline()

    def _retire_if_old(self) -> None:
        """Past its lifetime, the connection closes after answering this request."""
        cycle = self.cycle
        if time.monotonic() < self._retire_at or cycle.response_started:
            return
        if CLOSE_HEADER not in cycle.default_headers:
            cycle.default_headers = [*cycle.default_headers, CLOSE_HEADER]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._review_read_deadline()  # the next request's time starts now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _review_read_deadline(self) -> None:
        """Armed while a request is being read; disarmed once it has all arrived."""
        if self.transport.is_closing() or self.conn.their_state not in READING:
            self._disarm()
        elif self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        # Answer only if nothing is being answered: a new request that never arrived, or
        # one whose body never did while the app waited for it.
        unanswered = (
            cycle is None
            or not cycle.response_started
            or (cycle.response_complete and self.conn.their_state is h11.IDLE)
        )
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            pass  # idle between requests: nothing was sent, so nothing to answer
        elif unanswered:
            detail = f"the request did not arrive within {self.read_timeout_s:g} s"
            self.transport.write(_raw_response(408, "Request Timeout", detail))
        self.transport.close()

    @classmethod
    def _warn(cls, message: str) -> None:
        now = time.monotonic()
        if now - cls._last_warning >= WARN_EVERY_S:
            cls._last_warning = now
            log.warning(message)


def guarded_protocol(
    read_timeout_s: float, max_connections: int, max_age_s: float = 0.0
) -> type[GuardedH11Protocol]:
    """The protocol class with these limits (uvicorn builds one instance per connection)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "read_timeout_s": read_timeout_s,
            "max_connections": max_connections,
            "max_age_s": max_age_s,
        },
    )


class StoreWorker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker, serving with the store's limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = Settings.from_env()
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "http": guarded_protocol(
                settings.request_read_timeout_s,
                settings.max_connections,
                settings.connection_max_age_s if settings.workers > 1 else 0.0,
            ),
            "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        }
        super().__init__(*args, **kwargs)
