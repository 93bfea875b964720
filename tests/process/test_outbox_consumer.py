"""The example consumer: a per-order projection, each event applied once, acked after commit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.broker import (
    CANCELLED_LIFE,
    LIFE,
    NatsServer,
    drained,
    lives,
    projection,
    relay_for,
    rows,
    running,
    store_engine,
    stream_messages,
    write_events,
)
from tests.helpers import eventually_async
from tests.server import widget_store_command
from widget_store.config import PROJECT_ROOT
from widget_store.consumer import OrderProjector
from widget_store.events import Event
from widget_store.jetstream import JetStreamBroker


async def publish(nats_url: str, events: list[Event], *, fresh_ids: bool = False) -> None:
    """Put events on the stream as the relay would (or as copies the broker can't spot)."""
    broker = await JetStreamBroker.connect(nats_url, name="test-publisher")
    try:
        for e in events:
            dedup_id = str(uuid.uuid4()) if fresh_ids else e.event_id
            await broker.publish(e.subject, e.encode(), key=e.key, dedup_id=dedup_id)
    finally:
        await broker.close()


@asynccontextmanager
async def projecting(projector: OrderProjector) -> AsyncIterator[OrderProjector]:
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield projector
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def test_the_projection_follows_the_relayed_stream_and_skips_copies_past_the_dedup_window(
    database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_engine(database_url) as store, projection(tmp_path / "p.sqlite") as db:
            await write_events(store, range(1, 3), LIFE)
            await write_events(store, range(3, 4), CANCELLED_LIFE)
            async with running(relay_for(database_url, nats_server.url)):
                await drained(store)
            projector = OrderProjector(db, nats_server.url, durable="test")
            async with projecting(projector):
                await eventually_async(lambda: projector.tally.applied == 2 * len(LIFE) + 4)
                # Copies under new message IDs, as if republished after the broker's
                # duplicate window: the broker stores them, the consumer knows better.
                stream = [message.event for message in await stream_messages(nats_server.url)]
                await publish(nats_server.url, stream[:5], fresh_ids=True)
                await eventually_async(lambda: projector.tally.duplicates == 5)
            assert await rows(db) == {
                1: ("DISPATCHED", len(LIFE), len(LIFE)),
                2: ("DISPATCHED", len(LIFE), len(LIFE)),
                3: ("CANCELLED", 4, 4),
            }
            assert projector.tally.applied == 2 * len(LIFE) + 4

    asyncio.run(scenario())


def test_a_consumer_killed_between_its_commit_and_its_ack_gets_it_again_and_skips_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        events = lives({1: LIFE, 2: LIFE, 3: CANCELLED_LIFE})
        await publish(nats_server.url, events)
        db_path = tmp_path / "p.sqlite"
        async with projection(db_path) as db:
            log = tmp_path / "consumer.log"
            command = [sys.executable, "-m", "tests.outbox_processes", "consume"]
            command += [f"sqlite+aiosqlite:///{db_path}", nats_server.url, "test", "1"]
            with log.open("wb") as out:
                doomed = subprocess.Popen(
                    [*command, "--die-after", "7"], cwd=PROJECT_ROOT, stdout=out, stderr=out
                )
            returncode = await asyncio.to_thread(doomed.wait, 30)
            assert returncode == -signal.SIGKILL, log.read_text()
            before = await rows(db)
            assert sum(applied for _, applied, _ in before.values()) == 7, "died mid-batch"

            # The same durable consumer, started again: the unacknowledged rest is
            # redelivered, including the seventh, whose write had already committed.
            projector = OrderProjector(db, nats_server.url, durable="test", ack_wait_s=1)
            async with projecting(projector):
                await eventually_async(lambda: projector.tally.applied == len(events) - 7)
            assert projector.tally.duplicates >= 1
            assert await rows(db) == {
                1: ("DISPATCHED", len(LIFE), len(LIFE)),
                2: ("DISPATCHED", len(LIFE), len(LIFE)),
                3: ("CANCELLED", 4, 4),
            }

    asyncio.run(scenario())


def test_widget_store_consume_prints_what_it_applies_and_stops_on_sigterm(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        db_path = tmp_path / "projection.sqlite"
        env = {
            **os.environ,
            "WIDGET_STORE_NATS_URL": nats_server.url,
            "WIDGET_STORE_CONSUMER_DATABASE_URL": f"sqlite:///{db_path}",
        }
        log = tmp_path / "consume.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*widget_store_command(), "consume"], env=env, stdout=out, stderr=out
            )
        try:
            await publish(nats_server.url, lives({41: CANCELLED_LIFE}))
            await eventually_async(
                lambda: "checkout_failed" in log.read_text(), what="the last event"
            )
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 15) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
        output = log.read_text()
        assert "order 41 #1 CreateOrder_ok: PENDING" in output
        assert "order 41 #3 CancelOrder: CANCELLED" in output
        assert "4 applied, 0 duplicates" in output

    asyncio.run(scenario())
