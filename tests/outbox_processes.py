"""A relay and a consumer in processes of their own, for the tests that kill them.

    python -m tests.outbox_processes relay DB_URL NATS_URL NAME [--die-after-acks N]
    python -m tests.outbox_processes consume DB_URL NATS_URL DURABLE ACK_WAIT_S --die-after K

With `--die-after-acks N` the relay SIGKILLs itself right after the broker's Nth ack,
before it can mark anything sent. With `--die-after K` the consumer SIGKILLs itself
right after its Kth write committed, before acknowledging that message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from widget_store.consumer import OrderProjector, Outcome
from widget_store.events import Event, decode
from widget_store.jetstream import JetStreamBroker
from widget_store.relay import Broker, Relay


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesAfterAcks:
    """A broker that lets the process die right after its Nth acknowledged publish."""

    def __init__(self, broker: Broker, acks: int) -> None:
        self._broker = broker
        self._left = acks

    async def publish(self, subject: str, payload: bytes, *, key: str, dedup_id: str) -> bool:
        duplicate = await self._broker.publish(subject, payload, key=key, dedup_id=dedup_id)
        self._left -= 1
        if self._left == 0:
            print(f"acked {decode(payload).event_id}; dying before marking it sent", flush=True)
            die()
        return duplicate

    async def close(self) -> None:
        await self._broker.close()


class DiesAfterCommits(OrderProjector):
    """A projector that dies right after a write committed, before `handle` acks it."""

    def __init__(self, *args: Any, commits: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._left = commits

    async def apply(self, event: Event) -> Outcome:
        outcome = await super().apply(event)
        self._left -= 1
        if self._left == 0:
            print(f"committed {event.event_id}; dying before the ack", flush=True)
            die()
        return outcome


async def relay(database_url: str, nats_url: str, name: str, acks: int | None) -> None:
    async def connect() -> Broker:
        broker = await JetStreamBroker.connect(nats_url, name=name)
        return broker if acks is None else DiesAfterAcks(broker, acks)

    await Relay(database_url, connect, name=name, poll_s=0.05, takeover_s=0.2).run()


async def consume(
    database_url: str, nats_url: str, durable: str, ack_wait_s: float, commits: int
) -> None:
    engine = create_async_engine(database_url)
    projector = DiesAfterCommits(
        engine, nats_url, durable=durable, ack_wait_s=ack_wait_s, commits=commits
    )
    await projector.run(asyncio.Event())


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    relay_cmd = commands.add_parser("relay")
    relay_cmd.add_argument("database_url")
    relay_cmd.add_argument("nats_url")
    relay_cmd.add_argument("name")
    relay_cmd.add_argument("--die-after-acks", type=int)
    consume_cmd = commands.add_parser("consume")
    consume_cmd.add_argument("database_url")
    consume_cmd.add_argument("nats_url")
    consume_cmd.add_argument("durable")
    consume_cmd.add_argument("ack_wait_s", type=float)
    consume_cmd.add_argument("--die-after", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "relay":
        asyncio.run(relay(args.database_url, args.nats_url, args.name, args.die_after_acks))
    else:
        asyncio.run(
            consume(args.database_url, args.nats_url, args.durable, args.ack_wait_s, args.die_after)
        )


if __name__ == "__main__":
    main()
