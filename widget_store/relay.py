"""The outbox relay: publishes committed events to the broker, in order per order, once.

Why it is correct: an event is published only after every earlier event of its
aggregate was acknowledged, and each message carries the event's ID as its
deduplication ID. So however often a row is published (a relay killed between the ack
and marking the row sent, a timed-out publish that did arrive, two relays for a moment)
the broker keeps the first copy, and the stream holds each aggregate's events in order.
A consumer that applies events by their sequence number ignores any copy that slips
past the broker's duplicate window.

Why one relay at a time: every app process starts one, and the one that holds a
PostgreSQL advisory lock publishes while the others wait. The lock belongs to the
relay's own database session, so when its process dies (or the session is cut) the
lock is released and another process takes over within `takeover_s`. The lock saves
duplicate work; correctness never depended on it. The embedded SQLite store has one
process, so there the relay simply runs.

The broker behind the relay is anything with `publish` and `close` (`Broker`):
`widget_store.jetstream` is NATS JetStream; the README says how Kafka would fit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from widget_store import queries
from widget_store.events import Event

log = logging.getLogger("widget_store.relay")

# pg_try_advisory_lock's key for "the outbox relay" (the bytes of "WS-RELAY").
RELAY_LOCK_KEY = 0x57532D52454C4159
BATCH_SIZE = 200
MAX_BACKOFF_S = 5.0


class Broker(Protocol):
    """The narrow interface the relay needs from a message broker."""

    async def publish(self, subject: str, payload: bytes, *, key: str, dedup_id: str) -> bool:
        """Publish, and return once the broker has stored the message.

        `key` orders messages (a Kafka partition key; `order-12`); `dedup_id` is the
        event's unique ID, which the broker uses to drop a republished copy. Returns
        True if the broker said it already had it. Raises if it was not acknowledged.
        """
        ...

    async def close(self) -> None:
        """Let go of the connection."""
        ...


BrokerFactory = Callable[[], Awaitable[Broker]]


class Relay:
    """Publishes the outbox to a broker; run one per app process, `run()` until cancelled."""

    def __init__(
        self,
        database_url: str,
        connect: BrokerFactory,
        *,
        name: str = "widget-store-relay",
        poll_s: float = 0.5,
        takeover_s: float = 2.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._database_url = database_url
        self._connect = connect
        self.name = name
        self._poll_s = poll_s
        self._takeover_s = takeover_s
        self._batch_size = batch_size
        self.is_leader = False
        self.published = 0  # messages the broker acknowledged, duplicates included
        self.duplicates = 0  # of those, the ones it already had

    async def run(self) -> None:
        """Wait for the lead, relay while holding it, and start over if it is lost."""
        # Its own engine without a pool: closing the session must really end it, since
        # that is what releases the lock for the next relay.
        is_postgres = self._database_url.startswith("postgresql")
        engine = create_async_engine(
            self._database_url,
            poolclass=sa.pool.NullPool,
            connect_args={"server_settings": {"application_name": self.name}}
            if is_postgres
            else {},
        )
        try:
            while True:
                try:
                    async with engine.connect() as conn:
                        await self._wait_for_lead(conn)
                        await self._relay(conn)
                except (sa.exc.DBAPIError, OSError) as error:
                    # Most likely the session is gone, and the lock with it: another relay
                    # may lead now. Start over on a new session, waiting for the lead.
                    log.warning("%s: database error (%s); starting over", self.name, error)
                except Exception:
                    log.exception("%s: relay failed; restarting it", self.name)
                self.is_leader = False
                await asyncio.sleep(self._takeover_s)
        finally:
            self.is_leader = False
            await engine.dispose()

    async def _wait_for_lead(self, conn: AsyncConnection) -> None:
        if conn.dialect.name != "postgresql":
            self.is_leader = True  # one process per SQLite file: nobody to share with
            return
        while True:
            locked = await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(RELAY_LOCK_KEY)))
            await conn.commit()  # the lock is the session's, not the transaction's
            if locked:
                self.is_leader = True
                log.info("%s: relaying the outbox", self.name)
                return
            await asyncio.sleep(self._takeover_s)

    async def _relay(self, conn: AsyncConnection) -> None:
        broker: Broker | None = None
        backoff = self._poll_s
        try:
            while True:
                events = await queries.oldest_unsent(conn, self._batch_size)
                await conn.commit()
                if not events:
                    await asyncio.sleep(self._poll_s)
                    continue
                if broker is None:
                    try:
                        broker = await self._connect()
                    except Exception as error:  # the broker is down: events wait
                        log.warning("%s: cannot reach the broker: %s", self.name, error)
                        backoff = await self._back_off(backoff)
                        continue
                acked, failure = await self._publish(broker, events)
                await queries.mark_sent(conn, acked, datetime.now(UTC))
                await conn.commit()
                if failure is None:
                    backoff = self._poll_s
                    if len(events) < self._batch_size:
                        await asyncio.sleep(self._poll_s)
                    continue
                log.warning("%s: publish failed, will retry: %s", self.name, failure)
                # Start afresh: a broken connection is not worth nursing, and the next
                # round begins at the first unacknowledged event.
                await _close(broker)
                broker = None
                backoff = await self._back_off(backoff)
        finally:
            if broker is not None:
                await _close(broker)

    async def _publish(
        self, broker: Broker, events: list[Event]
    ) -> tuple[list[str], Exception | None]:
        """Publish in order until the first failure; the IDs the broker acknowledged.

        Stopping at the first failure is what keeps a later event of an order from
        overtaking an earlier one: nothing after it in this batch is sent.
        """
        acked: list[str] = []
        for event in events:
            try:
                duplicate = await broker.publish(
                    event.subject, event.encode(), key=event.key, dedup_id=event.event_id
                )
            except Exception as error:
                return acked, error
            acked.append(event.event_id)
            self.published += 1
            self.duplicates += int(duplicate)
        return acked, None

    async def _back_off(self, backoff: float) -> float:
        await asyncio.sleep(backoff)
        return min(backoff * 2, MAX_BACKOFF_S)


async def _close(broker: Broker) -> None:
    try:
        await broker.close()
    except Exception as error:  # closing a broken connection may fail too; nothing to do
        log.debug("closing the broker connection failed: %s", error)
