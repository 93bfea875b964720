"""The outbox's SQL: events written in the caller's transaction, numbered per order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.helpers import new_order
from widget_store import queries
from widget_store.config import Database
from widget_store.domain import OrderEvent, OrderStatus
from widget_store.events import Aggregate, EventPayloadError, decode
from widget_store.schema import outbox

T = TypeVar("T")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def run_on(database_url: str, scenario: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_async_engine(Database.parse(database_url).async_url)
        try:
            return await scenario(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def add(engine: AsyncEngine, order_id: int, type: str = "CreateOrder_ok") -> str:
    async with engine.begin() as conn:
        return await queries.add_event(conn, order_id=order_id, type=type, payload={}, at=NOW)


async def sequences(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.aggregate, outbox.c.aggregate_id, outbox.c.seq).order_by(
                outbox.c.outbox_id
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_each_order_numbers_its_events_from_one_without_gaps(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[tuple[str, int, int]]:
        for order_id in (7, 8, 7, 7, 8):
            await add(engine, order_id)
        async with engine.begin() as conn:
            await queries.add_aggregate_event(
                conn, aggregate=Aggregate.TRIP, aggregate_id=7, type="Booked", payload={}, at=NOW
            )
        return await sequences(engine)

    assert run_on(database_url, scenario) == [
        ("order", 7, 1),
        ("order", 8, 1),
        ("order", 7, 2),
        ("order", 7, 3),
        ("order", 8, 2),
        ("trip", 7, 1),  # a trip's events are numbered apart from the order with its ID
    ]


def test_an_event_exists_only_if_its_transaction_committed(database_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[tuple[str, int, int]]:
        await add(engine, 1)
        async with engine.connect() as conn:
            await conn.begin()
            await queries.add_event(conn, order_id=1, type="RefundPayment", payload={}, at=NOW)
            await conn.rollback()
        await add(engine, 1, "CancelOrder")
        return await sequences(engine)

    # The rolled-back event left neither a row nor a hole in the sequence.
    assert run_on(database_url, scenario) == [("order", 1, 1), ("order", 1, 2)]


def test_the_outbox_joins_a_session_transaction_like_the_saga_steps_use(
    database_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> list[tuple[str, int, int]]:
        async with AsyncSession(engine) as session, session.begin():
            await queries.add_event(session, order_id=3, type="Dispatch_ok", payload={}, at=NOW)
        return await sequences(engine)

    assert run_on(database_url, scenario) == [("order", 3, 1)]


@pytest.mark.parametrize(
    "payload", [{"payment_id": "pay_1"}, {"Shipping_Address": "1 Main St"}, {"x": "y" * 3000}]
)
def test_payment_data_addresses_and_large_payloads_never_enter_the_outbox(
    database_url: str, payload: dict[str, str]
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await queries.add_event(conn, order_id=1, type="A", payload=payload, at=NOW)

    with pytest.raises(EventPayloadError):
        run_on(database_url, scenario)


def test_a_type_that_is_no_subject_token_is_refused(database_url: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        run_on(database_url, lambda engine: add(engine, 1, "Create.Order"))


def test_the_relay_reads_the_oldest_unsent_marks_them_sent_and_sees_the_lag(
    database_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            empty = await queries.outbox_lag(conn, NOW)
        assert (empty.unsent, empty.oldest_age_s) == (0, None)

        async with engine.begin() as conn:
            for minutes, (order_id, type) in enumerate([(1, "A"), (2, "B"), (1, "C")]):
                await queries.add_event(
                    conn,
                    order_id=order_id,
                    type=type,
                    payload={"n": minutes},
                    at=NOW + timedelta(minutes=minutes),
                )
        async with engine.begin() as conn:
            first_two = await queries.oldest_unsent(conn, limit=2)
            seen = [(e.aggregate_id, e.seq, e.type) for e in first_two]
            assert seen == [(1, 1, "A"), (2, 1, "B")]
            assert first_two[0].payload == {"n": 0}
            lag = await queries.outbox_lag(conn, NOW + timedelta(minutes=5))
            assert (lag.unsent, lag.oldest_unsent_at, lag.oldest_age_s) == (3, NOW, 300.0)

            assert await queries.mark_sent(conn, [e.event_id for e in first_two], NOW) == 2
            assert await queries.mark_sent(conn, [first_two[0].event_id], NOW) == 0  # once
        async with engine.connect() as conn:
            rest = await queries.oldest_unsent(conn, limit=10)
            assert [(e.aggregate_id, e.seq) for e in rest] == [(1, 2)]
            lag = await queries.outbox_lag(conn, NOW + timedelta(minutes=5))
            assert (lag.unsent, lag.oldest_age_s) == (1, 180.0)
            # What goes on the bus reads back as the row it came from.
            assert decode(rest[0].encode()) == rest[0]
            assert json.loads(rest[0].encode())["aggregate"] == "order"

    run_on(database_url, scenario)


@pytest.mark.postgres
def test_two_transactions_writing_one_orders_events_queue_instead_of_colliding(
    postgres_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> list[tuple[str, int, int]]:
        async with engine.connect() as first:
            await first.begin()
            await queries.add_event(first, order_id=5, type="A", payload={}, at=NOW)
            second = asyncio.create_task(add(engine, 5, "B"))
            await asyncio.sleep(0.3)
            assert not second.done(), "the second writer waits for the first's counter lock"
            await first.commit()
        await second
        return await sequences(engine)

    assert run_on(postgres_url, scenario) == [("order", 5, 1), ("order", 5, 2)]


def test_a_log_entry_written_again_by_a_rerun_step_goes_to_the_outbox_once(
    database_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> tuple[list[bool], list[tuple[str, int, int]]]:
        async with engine.begin() as conn:
            order_id = await new_order(conn, "rerun")
        added = []
        for _run in range(2):  # the step committed, died before its checkpoint, ran again
            async with engine.begin() as conn:
                added.append(await queries.append_event(conn, order_id, OrderEvent.ORDER_CREATED))
        return added, await sequences(engine)

    added, events = run_on(database_url, scenario)
    assert added == [True, False]
    assert events == [("order", 1, 1)]


def test_several_log_entries_at_once_go_in_order_once_each_with_their_events_numbered(
    database_url: str,
) -> None:
    async def scenario(
        engine: AsyncEngine,
    ) -> tuple[list[list[OrderEvent]], list[str], list[tuple[str, str, int]]]:
        async with engine.begin() as conn:
            order_id = await new_order(conn, "many")
            await queries.append_event(conn, order_id, OrderEvent.ORDER_CREATED)
        entries = [
            (OrderEvent.RESERVED, ""),
            (OrderEvent.PAYMENT_OPENED, "until noon"),
            (OrderEvent.COMPENSATION_PARKED, "repeatable"),
        ]
        added = []
        for _run in range(2):  # the step committed, died before its checkpoint, ran again
            async with engine.begin() as conn:
                added.append(await queries.append_events(conn, order_id, entries))
        async with engine.connect() as conn:
            details = await queries.order_details(conn, order_id)
            published = await conn.execute(
                sa.select(outbox.c.type, outbox.c.aggregate, outbox.c.seq).order_by(
                    outbox.c.outbox_id
                )
            )
        assert details is not None
        logged = [f"{e['type']}:{e['detail']}" for e in details["events"]]
        return added, logged, [tuple(row) for row in published]  # type: ignore[misc]

    added, logged, published = run_on(database_url, scenario)
    once, parked = [OrderEvent.RESERVED, OrderEvent.PAYMENT_OPENED], OrderEvent.COMPENSATION_PARKED
    assert added == [[*once, parked], [parked]]  # the once-only entries went in once
    assert logged == [
        f"{OrderEvent.ORDER_CREATED}:",
        f"{OrderEvent.RESERVED}:",
        f"{OrderEvent.PAYMENT_OPENED}:until noon",
        f"{parked}:repeatable",
        f"{parked}:repeatable",
    ]
    assert published == [
        (OrderEvent.ORDER_CREATED.value, "order", 1),
        (OrderEvent.RESERVED.value, "order", 2),
        (OrderEvent.PAYMENT_OPENED.value, "order", 3),
        (parked.value, "order", 4),
        (parked.value, "order", 5),
    ]


def test_one_call_may_not_log_the_same_entry_twice(postgres_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            twice = [(OrderEvent.RESERVED, ""), (OrderEvent.RESERVED, "")]
            await queries.append_events(conn, 1, twice)

    with pytest.raises(ValueError, match="once per call"):
        run_on(postgres_url, scenario)


def test_a_status_change_and_its_log_go_in_together_and_only_when_the_status_moves(
    database_url: str,
) -> None:
    async def scenario(engine: AsyncEngine) -> tuple[list[bool], Any, list[str], list[int]]:
        async with engine.begin() as conn:
            order_id = await new_order(conn, "advance")
        # On PostgreSQL the steps run it outside a transaction: it must stand alone.
        alone = engine.execution_options(isolation_level="AUTOCOMMIT")
        due = NOW + timedelta(seconds=5)
        shipped = [(OrderEvent.SHIPMENT_CREATED, "TRK-1"), (OrderEvent.DISPATCH_STARTED, "5s")]
        done = [(OrderEvent.DISPATCHED, ""), (OrderEvent.COMPLETE, "")]
        moves = []
        async with (alone if alone.dialect.name == "postgresql" else engine).connect() as conn:
            for old, new, log, tracking in [
                (OrderStatus.PAID, OrderStatus.DISPATCHED, done, None),  # not PAID yet
                (OrderStatus.PENDING, OrderStatus.PAID, shipped, "TRK-1"),
                (OrderStatus.PENDING, OrderStatus.PAID, shipped, "TRK-2"),  # a rerun
                (OrderStatus.PAID, OrderStatus.DISPATCHED, done, None),
            ]:
                moves.append(
                    await queries.advance_and_log(
                        conn,
                        order_id,
                        old=old,
                        new=new,
                        log=log,
                        tracking_number=tracking,
                        dispatch_eta=due if tracking else None,
                    )
                )
            await conn.commit()  # SQLite's: PostgreSQL's statements committed each
        async with engine.connect() as conn:
            order = await queries.order_by_id(conn, order_id)
            details = await queries.order_details(conn, order_id)
            seqs = await conn.execute(sa.select(outbox.c.seq).order_by(outbox.c.outbox_id))
        assert details is not None
        return moves, order, [e["type"] for e in details["events"]], list(seqs.scalars())

    moves, order, logged, seqs = run_on(database_url, scenario)
    assert moves == [False, True, False, True]
    assert (order.status, order.tracking_number) == (OrderStatus.DISPATCHED.value, "TRK-1")
    assert order.dispatch_eta == NOW + timedelta(seconds=5)
    assert logged == [
        OrderEvent.SHIPMENT_CREATED,
        OrderEvent.DISPATCH_STARTED,
        OrderEvent.DISPATCHED,
        OrderEvent.COMPLETE,
    ]
    assert seqs == [1, 2, 3, 4]


def test_a_tracking_number_comes_with_its_dispatch_deadline(postgres_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await queries.advance_and_log(
                conn, 1, old=OrderStatus.PENDING, new=OrderStatus.PAID, log=[], tracking_number="T"
            )

    with pytest.raises(ValueError, match="go together"):
        run_on(postgres_url, scenario)
