"""An example subscriber: a per-order projection of the store's event stream.

This is the module to copy to hang a service off the store (an email sender, a
warehouse feed, analytics). It shows the three rules that make a consumer safe:

1. **Durable.** A named JetStream pull consumer remembers how far it got, so a restart
   carries on where it stopped; nothing published while it was down is missed.
2. **Once, by sequence.** Each order's events carry 1, 2, 3, ...; the projection stores
   the last one applied, and applies an event only if it is the next one, in one
   conditional write. A redelivered or republished copy is recognised and skipped, and
   an event that arrives early is handed back to wait for its predecessor.
3. **Ack after commit.** The message is acknowledged only once its write committed. If
   the consumer dies in between, JetStream redelivers it and rule 2 skips it.

The projection lives in its own table, in its own metadata, created when the consumer
starts: it belongs to the consuming service, not to the store's migrations.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import nats.errors
import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from widget_store import jetstream
from widget_store.domain import OrderEvent, OrderStatus
from widget_store.events import SUBJECT_PREFIX, Aggregate, Event, decode
from widget_store.schema import Id, UTCDateTime

log = logging.getLogger("widget_store.consumer")

DURABLE = "widget-store-order-projection"
ORDER_SUBJECTS = f"{SUBJECT_PREFIX}.{Aggregate.ORDER.subject_token}.>"
# How long JetStream waits for an ack before redelivering: the longest a crashed
# consumer's messages wait to be picked up again.
ACK_WAIT_S = 30.0
FETCH_BATCH = 50
EARLY_RETRY_S = 1.0

# What the consumer knows of the store's vocabulary: the events that move an order to a
# status. An event may also say so itself (`"status"` in its payload), which wins.
STATUS_AFTER: dict[str, OrderStatus] = {
    OrderEvent.ORDER_CREATED: OrderStatus.PENDING,
    OrderEvent.SHIPMENT_CREATED: OrderStatus.PAID,
    OrderEvent.DISPATCHED: OrderStatus.DISPATCHED,
    OrderEvent.COMPLETE: OrderStatus.DISPATCHED,
    OrderEvent.ORDER_CANCELLED: OrderStatus.CANCELLED,
    OrderEvent.FAILED: OrderStatus.CANCELLED,
}

projection_metadata = sa.MetaData()

order_projection = sa.Table(
    "order_projection",
    projection_metadata,
    sa.Column("order_id", Id, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(16)),  # the latest status the events told of
    sa.Column("events", sa.Integer, nullable=False),  # events applied
    sa.Column("last_seq", sa.Integer, nullable=False),  # the last one's sequence number
    sa.Column("last_event_id", sa.String(36), nullable=False),
    sa.Column("last_type", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # applied before: ack it and move on
    EARLY = "early"  # its predecessor has not been applied yet: retry it later


def status_after(event: Event) -> OrderStatus | None:
    """The order's status after this event, if the event changes it."""
    said = event.payload.get("status")
    if isinstance(said, str) and said in {status.value for status in OrderStatus}:
        return OrderStatus(said)
    return STATUS_AFTER.get(event.type)


async def apply_event(conn: AsyncConnection, event: Event) -> Outcome:
    """Apply one order event to the projection, at most once (in the caller's transaction).

    The WHERE clause `last_seq = seq - 1` is the whole idempotency story: a copy of an
    applied event matches no row, and neither does one that came too early.
    """
    now = datetime.now(UTC)
    status = status_after(event)
    row = order_projection.c
    if event.seq == 1:
        if await _last_seq(conn, event.aggregate_id) is not None:
            return Outcome.DUPLICATE
        await conn.execute(
            sa.insert(order_projection).values(
                order_id=event.aggregate_id,
                status=status,
                events=1,
                last_seq=1,
                last_event_id=event.event_id,
                last_type=event.type,
                updated_at=now,
            )
        )  # a concurrent twin fails here on the primary key; redelivered, it is a duplicate
        return Outcome.APPLIED
    changes: dict[str, object] = {
        "events": row.events + 1,
        "last_seq": event.seq,
        "last_event_id": event.event_id,
        "last_type": event.type,
        "updated_at": now,
    }
    if status is not None:
        changes["status"] = status
    result = await conn.execute(
        sa.update(order_projection)
        .where(row.order_id == event.aggregate_id, row.last_seq == event.seq - 1)
        .values(changes)
    )
    if getattr(result, "rowcount", 0) == 1:
        return Outcome.APPLIED
    applied = await _last_seq(conn, event.aggregate_id)
    return Outcome.DUPLICATE if applied is not None and applied >= event.seq else Outcome.EARLY


async def _last_seq(conn: AsyncConnection, order_id: int) -> int | None:
    column = order_projection.c.last_seq
    seq: int | None = await conn.scalar(
        sa.select(column).where(order_projection.c.order_id == order_id)
    )
    return seq


@dataclass
class Tally:
    applied: int = 0
    duplicates: int = 0
    early: int = 0


class OrderProjector:
    """Keeps `order_projection` up to date from the stream, until `stop` is set."""

    def __init__(
        self,
        engine: AsyncEngine,
        nats_url: str,
        *,
        durable: str = DURABLE,
        ack_wait_s: float = ACK_WAIT_S,
    ) -> None:
        self._engine = engine
        self._nats_url = nats_url
        self._durable = durable
        self._ack_wait_s = ack_wait_s
        self.tally = Tally()

    async def create_table(self) -> None:
        """Create the projection's table if it is missing (the consumer owns it)."""
        async with self._engine.begin() as conn:
            await conn.run_sync(projection_metadata.create_all)

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe (durably) and apply events as they come, until `stop` is set."""
        await self.create_table()
        client = await jetstream.connect(self._nats_url, name=self._durable, reconnect=True)
        try:
            js = client.jetstream()
            # The consumer may start before the store ever published: make sure the
            # stream is there to subscribe to.
            await jetstream.ensure_stream(js)
            subscription = await js.pull_subscribe(
                ORDER_SUBJECTS,
                durable=self._durable,
                stream=jetstream.STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self._ack_wait_s,
                ),
            )
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=1.0)
                except TimeoutError:  # nats-py raises its own and asyncio's: both are this
                    continue  # nothing new this second
                except nats.errors.Error as error:  # the broker is away; nats-py reconnects
                    log.warning("fetch failed: %s", error)
                    await asyncio.sleep(1.0)
                    continue
                for message in messages:
                    await self.handle(message)
        finally:
            await client.close()

    async def handle(self, message: Msg) -> None:
        """Apply one message, then acknowledge it (or hand it back)."""
        try:
            event = decode(message.data)
        except (ValueError, KeyError, TypeError) as error:
            log.error("not an event, dropped for good: %s", error)
            await message.term()
            return
        try:
            outcome = await self.apply(event)
        except (sa.exc.SQLAlchemyError, ConnectionError) as error:
            # Not applied (a refused connection comes unwrapped from asyncpg); JetStream
            # redelivers it after a pause.
            log.warning("order %s #%s not applied: %s", event.aggregate_id, event.seq, error)
            await message.nak(delay=EARLY_RETRY_S)
            return
        if outcome is Outcome.EARLY:
            # Its predecessor is still on its way (a redelivery after a crash comes after
            # newer messages). If it never comes, the projection was reset while this
            # durable consumer kept its place: start over under a new --durable name.
            self.tally.early += 1
            log.info("order %s #%s came early; retrying it", event.aggregate_id, event.seq)
            await message.nak(delay=EARLY_RETRY_S)
            return
        await message.ack()  # only now: the write above has committed

    async def apply(self, event: Event) -> Outcome:
        """Apply the event in a transaction of its own; the outcome once it committed."""
        async with self._engine.begin() as conn:
            outcome = await apply_event(conn, event)
        if outcome is Outcome.APPLIED:
            self.tally.applied += 1
            log.info(
                "order %s #%s %s: %s",
                event.aggregate_id,
                event.seq,
                event.type,
                status_after(event) or "status unchanged",
            )
        elif outcome is Outcome.DUPLICATE:
            self.tally.duplicates += 1
        return outcome


async def consume(engine: AsyncEngine, nats_url: str, *, durable: str = DURABLE) -> Tally:
    """Run the projector until SIGINT or SIGTERM (`widget-store consume`); its tally."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    projector = OrderProjector(engine, nats_url, durable=durable)
    await projector.run(stop)
    return projector.tally
