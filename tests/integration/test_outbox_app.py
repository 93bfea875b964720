"""The store with its event stream: the relay runs in the app when a NATS URL is set,
the outbox fills either way, and /ops shows how far behind the stream is."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from sqlalchemy.ext.asyncio import create_async_engine

from tests.broker import NatsServer, stream_messages
from tests.helpers import Store, eventually_async
from widget_store import queries
from widget_store.config import Settings


def add_events(settings: Settings, order_id: int, types: list[str]) -> list[str]:
    """Events written straight into the outbox, as a saga step's transaction would."""

    async def write() -> list[str]:
        engine = create_async_engine(settings.database.async_url)
        try:
            async with engine.begin() as conn:
                return [
                    await queries.add_event(
                        conn, order_id=order_id, type=t, payload={}, at=queries.utcnow()
                    )
                    for t in types
                ]
        finally:
            await engine.dispose()

    return asyncio.run(write())


def test_without_a_nats_url_the_outbox_fills_and_ops_shows_the_lag(store: Store) -> None:
    assert store.http.get("/ops/summary").json()["outbox"] == {
        "unsent": 0,
        "oldest_unsent_at": None,
        "oldest_age_s": None,
    }
    add_events(store.settings, 1, ["CreateOrder_ok", "ReserveInventory_ok"])
    time.sleep(0.6)  # longer than a relay's poll: none runs, so nothing goes out

    lag = store.http.get("/ops/summary").json()["outbox"]
    assert lag["unsent"] == 2
    assert lag["oldest_unsent_at"] is not None
    assert lag["oldest_age_s"] >= 0.5


def test_with_a_nats_url_the_app_relays_the_outbox_to_the_stream(
    settings: Settings, nats_server: NatsServer
) -> None:
    with Store.running(replace(settings, nats_url=nats_server.url, outbox_poll_s=0.05)) as store:
        event_ids = add_events(store.settings, 1, ["CreateOrder_ok", "ReserveInventory_ok"])

        def drained() -> bool:
            return store.http.get("/ops/summary").json()["outbox"]["unsent"] == 0

        asyncio.run(eventually_async(drained, what="the app's relay draining the outbox"))
    published = asyncio.run(stream_messages(nats_server.url))
    assert [m.event.event_id for m in published] == event_ids
