"""A shopper's-eye driver for the store under test, and direct looks at its database."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store import queries
from widget_store.app import create_app
from widget_store.config import Environment, Settings
from widget_store.domain import PricedLine
from widget_store.payments import SIGNATURE_HEADER, sign_webhook, webhook_body

TERMINAL = ("DISPATCHED", "CANCELLED")
ADMIN_TOKEN = "test-admin-token-0123456789"
PRODUCTION_WEBHOOK_SECRET = "whsec_production_secret_7Hq2Zp9x"
T = TypeVar("T")


Ignored = tuple[type[BaseException], ...]
# A connection refused or dropped counts as "not yet": a server restarting is what a
# browser or a provider would wait through too.
NOT_YET: Ignored = (httpx.TransportError,)


def eventually(
    read: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 20.0,
    every: float = 0.05,
    what: str | Callable[[], str] = "the condition",
    ignoring: Ignored = NOT_YET,
) -> T:
    """Read until `until(value)` holds and return that value; fail naming the last one.

    The one way the tests wait for something. `read` may raise one of `ignoring` to say
    "not yet", or an AssertionError to give up at once (the server died, say). `what`
    names what is awaited, in the failure; a callable is called only then (to read a log).
    """
    deadline = time.monotonic() + timeout
    last: _Last[T] = _Last()
    while True:
        try:
            last.value = read()
        except ignoring as error:
            last.error = error
        else:
            if until(last.value):
                return last.value
        if time.monotonic() > deadline:
            raise last.failure(what, timeout)
        time.sleep(every)


async def eventually_async(
    read: Callable[[], T | Awaitable[T]],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 20.0,
    every: float = 0.05,
    what: str | Callable[[], str] = "the condition",
    ignoring: Ignored = NOT_YET,
) -> T:
    """`eventually` for a test running an event loop: `read` may be a coroutine function,
    and the wait between reads lets the loop run."""
    deadline = time.monotonic() + timeout
    last: _Last[T] = _Last()
    while True:
        try:
            value = read()
            last.value = await value if inspect.isawaitable(value) else value
        except ignoring as error:
            last.error = error
        else:
            if until(last.value):
                return last.value
        if time.monotonic() > deadline:
            raise last.failure(what, timeout)
        await asyncio.sleep(every)


class _Last(Generic[T]):
    """What the last read gave, for the failure message."""

    value: T
    error: BaseException | None = None

    def failure(self, what: str | Callable[[], str], timeout: float) -> AssertionError:
        seen = getattr(self, "value", None)
        named = what() if callable(what) else what
        also = f" (last error: {self.error!r})" if self.error is not None else ""
        return AssertionError(f"{named} never held within {timeout} s; last seen: {seen!r}{also}")


@dataclass(frozen=True)
class Placed:
    """A checkout that is waiting for its payment."""

    order_id: int
    payment_id: str
    total: int
    payment_url: str


def new_key() -> str:
    return f"test-{uuid.uuid4().hex}"


def cart(*lines: tuple[int, int], address: str = "1 Main Street, Springfield") -> dict[str, Any]:
    return {
        "items": [{"product_id": p, "quantity": q} for p, q in lines],
        "shipping_address": address,
    }


def production_settings(settings: Settings) -> Settings:
    """These settings as production runs them: its own secret, the admin token required."""
    return replace(
        settings,
        env=Environment.PRODUCTION,
        webhook_secret=PRODUCTION_WEBHOOK_SECRET,
        admin_token=ADMIN_TOKEN,
    )


class Shopper:
    """Drives the HTTP API the way a client and the payment provider do."""

    def __init__(self, http: httpx.Client | TestClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    # --- the storefront ---

    def stock(self) -> dict[int, int]:
        response = self.http.get("/products")
        response.raise_for_status()
        return {p["product_id"]: p["inventory"] for p in response.json()}

    def checkout(
        self, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        key = key or new_key()
        if body is None:
            return self.http.post(f"/checkout/{key}")
        return self.http.post(f"/checkout/{key}", json=body)

    def order(self, order_id: int) -> dict[str, Any]:
        response = self.http.get(f"/order/{order_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def order_as_admin(self, order_id: int) -> dict[str, Any]:
        """The order as the operator reads it (production needs the admin token)."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        response = self.http.get(f"/order/{order_id}", headers=headers)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for(self, order_id: int, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        wanted = statuses or TERMINAL
        return eventually(
            lambda: self.order(order_id),
            lambda order: order["status"] in wanted,
            timeout=timeout,
            what=f"order {order_id} being {'/'.join(wanted)}",
        )

    # --- the payment provider ---

    def choose(self, payment_url: str, decision: str) -> httpx.Response:
        """Press Pay or Decline on the provider's hosted page (its link is the checkout's)."""
        return self.http.post(f"{payment_url}/{decision}", follow_redirects=False)

    def webhook(
        self,
        payment_id: str,
        status: str,
        amount_cents: int,
        *,
        event_id: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        """Call the webhook directly, signed unless told otherwise."""
        raw = (
            body
            if body is not None
            else webhook_body(
                event_id or f"evt_{uuid.uuid4().hex}", payment_id, status, amount_cents
            )
        )
        headers = {"Content-Type": "application/json"}
        if signature is None:
            signature = sign_webhook(
                secret or self.settings.webhook_secret,
                int(time.time()) if timestamp is None else timestamp,
                raw,
            )
        if signature:
            headers[SIGNATURE_HEADER] = signature
        return self.http.post(
            f"/payment_webhook/{payment_id}/{status}", content=raw, headers=headers
        )


class Store(Shopper):
    """The store running in-process (FastAPI TestClient), plus a window onto its tables."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        super().__init__(client, settings)
        self.client = client
        self.engine = sa.create_engine(settings.database.sync_url)

    @classmethod
    @contextmanager
    def running(cls, settings: Settings, **adapters: Any) -> Iterator[Store]:
        app = create_app(settings, **adapters)
        with TestClient(app, raise_server_exceptions=False) as client:
            store = cls(client, settings)
            try:
                yield store
            finally:
                store.engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(sql), params)]

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def event_types(self, order_id: int) -> list[str]:
        return [e["type"] for e in self.order(order_id)["events"]]


async def new_order(conn: AsyncConnection, checkout_key: str) -> int:
    """A PENDING order of one line, as place_order creates it (for tests of the SQL)."""
    order_id, _ = await queries.insert_order(
        conn,
        checkout_key=checkout_key,
        fingerprint="f",
        lines=[PricedLine(1, 1, 100)],
        total_cents=100,
        shipping_address="1 Main Street",
        payment_id=f"pay_{checkout_key}",
        access_token="t",
        payment_deadline=datetime(2026, 12, 2, 12, 15, tzinfo=UTC),
    )
    return order_id
