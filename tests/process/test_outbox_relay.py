"""The relay against a real NATS JetStream server: in order, once, through outages and kills."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.broker import (
    LIFE,
    NatsServer,
    StreamMessage,
    async_url,
    drained,
    relay_for,
    running,
    store_engine,
    stream_messages,
    unsent,
    write_events,
)
from tests.helpers import eventually_async
from widget_store.config import PROJECT_ROOT
from widget_store.jetstream import JetStreamBroker
from widget_store.relay import Broker, Relay


def assert_each_event_once_in_order(messages: list[StreamMessage], event_ids: list[str]) -> None:
    """The stream holds every event exactly once, each order's in sequence order."""
    assert sorted(m.event.event_id for m in messages) == sorted(event_ids)
    seqs: dict[int, list[int]] = defaultdict(list)
    for message in messages:
        assert message.msg_id == message.event.event_id, "Nats-Msg-Id is the event ID"
        assert message.subject == f"widget_store.orders.{message.event.type}"
        seqs[message.event.aggregate_id].append(message.event.seq)
    for order_id, order_seqs in seqs.items():
        assert order_seqs == list(range(1, len(order_seqs) + 1)), f"order {order_id}"


@contextmanager
def relay_process(
    database_url: str, nats_url: str, name: str, log: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tests.outbox_processes", "relay"]
    command += [async_url(database_url), nats_url, name, *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_the_relay_publishes_each_orders_events_in_order_with_the_event_id_as_msg_id(
    database_url: str, nats_server: NatsServer
) -> None:
    async def scenario() -> None:
        async with store_engine(database_url) as engine:
            event_ids = await write_events(engine, range(1, 4), LIFE)
            async with running(relay_for(database_url, nats_server.url)) as relay:
                await drained(engine)
            messages = await stream_messages(nats_server.url)
            assert_each_event_once_in_order(messages, event_ids)
            assert [m.event.event_id for m in messages] == event_ids  # oldest first, too
            assert (relay.published, relay.duplicates) == (len(event_ids), 0)
            assert messages[0].event.payload == {"step": "CreateOrder_ok"}

    asyncio.run(scenario())


class RefusesFirstOffer:
    """A broker that refuses one event the first time it is offered, and only then."""

    def __init__(self, broker: Broker, event_id: str, refused: list[str]) -> None:
        self._broker = broker
        self._event_id = event_id
        self._refused = refused  # shared: the relay reconnects after a failure

    async def publish(self, subject: str, payload: bytes, *, key: str, dedup_id: str) -> bool:
        if dedup_id == self._event_id and not self._refused:
            self._refused.append(dedup_id)
            raise TimeoutError("no ack this time")
        return await self._broker.publish(subject, payload, key=key, dedup_id=dedup_id)

    async def close(self) -> None:
        await self._broker.close()


def test_a_refused_publish_holds_back_the_later_events_of_its_order(
    database_url: str, nats_server: NatsServer
) -> None:
    async def scenario() -> None:
        async with store_engine(database_url) as engine:
            event_ids = await write_events(engine, range(1, 3), LIFE[:4])
            second_of_order_1 = event_ids[2]  # interleaved: 1#1, 2#1, 1#2, 2#2, ...
            refused: list[str] = []

            async def connect() -> Broker:
                broker = await JetStreamBroker.connect(nats_server.url)
                return RefusesFirstOffer(broker, second_of_order_1, refused)

            relay = Relay(async_url(database_url), connect, poll_s=0.05, takeover_s=0.2)
            async with running(relay):
                await drained(engine)
            assert refused == [second_of_order_1]
        assert_each_event_once_in_order(await stream_messages(nats_server.url), event_ids)

    asyncio.run(scenario())


def test_with_the_broker_stopped_the_outbox_grows_and_drains_in_order_once_it_is_back(
    database_url: str, nats_server: NatsServer
) -> None:
    async def scenario() -> None:
        async with (
            store_engine(database_url) as engine,
            running(relay_for(database_url, nats_server.url)),
        ):
            before = await write_events(engine, range(1, 3), LIFE[:2])
            await drained(engine)

            nats_server.stop()
            during = await write_events(engine, range(1, 4), LIFE[2:6])
            await asyncio.sleep(1.0)  # the relay keeps trying meanwhile
            assert await unsent(engine) == len(during), "nothing is lost, only delayed"

            nats_server.start()
            after = await write_events(engine, range(1, 4), LIFE[6:])
            await drained(engine)
        messages = await stream_messages(nats_server.url)
        assert_each_event_once_in_order(messages, before + during + after)

    asyncio.run(scenario())


def test_a_relay_killed_between_the_ack_and_marking_sent_republishes_and_the_broker_drops_it(
    database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_engine(database_url) as engine:
            event_ids = await write_events(engine, range(1, 3), LIFE)
            log = tmp_path / "relay.log"
            args = ("--die-after-acks", "5")
            with relay_process(database_url, nats_server.url, "doomed", log, *args) as process:
                returncode = await asyncio.to_thread(process.wait, 30)
            assert returncode == -signal.SIGKILL, log.read_text()
            assert len(await stream_messages(nats_server.url)) == 5
            assert await unsent(engine) == len(event_ids), "it died before marking any sent"

            async with running(relay_for(database_url, nats_server.url)) as relay:
                await drained(engine)
            assert relay.duplicates == 5, "the broker recognised the five it already had"
        assert_each_event_once_in_order(await stream_messages(nats_server.url), event_ids)

    asyncio.run(scenario())


@pytest.mark.postgres
def test_of_two_relays_one_publishes_and_the_other_takes_over_when_its_session_dies(
    postgres_url: str, nats_server: NatsServer
) -> None:
    async def scenario() -> None:
        # The first comes back slowly, so that the second is the one to take over.
        first = relay_for(postgres_url, nats_server.url, "relay-first", takeover_s=5.0)
        second = relay_for(postgres_url, nats_server.url, "relay-second", takeover_s=0.2)
        async with store_engine(postgres_url) as engine, running(first):
            await eventually_async(lambda: first.is_leader, what="the first relay to lead")
            async with running(second):
                early = await write_events(engine, range(1, 4), LIFE[:4])
                await drained(engine)
                assert (first.published, second.published) == (len(early), 0)
                assert not second.is_leader

                async with engine.connect() as conn:
                    ended = await conn.scalar(
                        sa.text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = 'relay-first'"
                        )
                    )
                assert ended == 1
                await eventually_async(lambda: second.is_leader, what="the second to lead")
                late = await write_events(engine, range(1, 4), LIFE[4:])
                await drained(engine)
                assert first.published == len(early), "the first stopped with its session"
                assert second.published >= len(late)
                assert not first.is_leader
        assert_each_event_once_in_order(await stream_messages(nats_server.url), early + late)

    asyncio.run(scenario())


@pytest.mark.postgres
def test_when_the_leading_relays_process_is_killed_another_takes_over(
    postgres_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_engine(postgres_url) as engine:
            log = tmp_path / "relay.log"
            with relay_process(postgres_url, nats_server.url, "relay-doomed", log) as process:
                early = await write_events(engine, range(1, 3), LIFE[:3])
                await drained(engine)
                async with running(relay_for(postgres_url, nats_server.url)) as standby:
                    await asyncio.sleep(1.0)
                    assert not standby.is_leader, "one relay at a time"
                    process.send_signal(signal.SIGKILL)
                    await eventually_async(lambda: standby.is_leader, what="a takeover")
                    late = await write_events(engine, range(1, 3), LIFE[3:])
                    await drained(engine)
                    assert standby.published >= len(late)
        assert_each_event_once_in_order(await stream_messages(nats_server.url), early + late)

    asyncio.run(scenario())
