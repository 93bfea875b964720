"""The transactional outbox: events written beside their state change, read by the relay.

`add_event` runs inside the caller's transaction, so an event exists if and only if the
change it describes committed. The relay reads the oldest unsent rows, publishes them
and marks them sent; a row marked sent twice (two relays, a retry) changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from widget_store.events import Aggregate, Event, OutboxLag, check_payload, subject_of
from widget_store.queries._base import Db
from widget_store.schema import outbox, outbox_sequences


async def add_event(
    db: Db, *, order_id: int, type: str, payload: Mapping[str, Any], at: datetime
) -> str:
    """Write an order's next event to the outbox, in the caller's transaction.

    `type` is the store's event vocabulary (`OrderEvent` values); `payload` is a small
    JSON object without payment data. Returns the event's ID (its Nats-Msg-Id).
    """
    return await add_aggregate_event(
        db, aggregate=Aggregate.ORDER, aggregate_id=order_id, type=type, payload=payload, at=at
    )


# On PostgreSQL an order's log entry and its outbox event go in as one statement: the
# entry (once-only), then, only if it went in, the order's next sequence number and the
# outbox row. The same three writes as append_event's separate statements, in the same
# order and under the same locks, for one round trip instead of three.
LOG_AND_PUBLISH = sa.text(
    """
    WITH logged AS (
        INSERT INTO order_events (order_id, type, detail, at, once_key)
        VALUES (:order_id, :type, :detail, :at, :once_key)
        ON CONFLICT DO NOTHING
        RETURNING order_id
    ), counted AS (
        INSERT INTO outbox_sequences (aggregate, aggregate_id, last_seq)
        SELECT CAST(:aggregate AS VARCHAR), order_id, 1 FROM logged
        ON CONFLICT (aggregate, aggregate_id)
        DO UPDATE SET last_seq = outbox_sequences.last_seq + 1
        RETURNING last_seq
    )
    INSERT INTO outbox (event_id, aggregate, aggregate_id, seq, type, at, payload)
    SELECT CAST(:event_id AS VARCHAR), CAST(:aggregate AS VARCHAR), CAST(:order_id AS BIGINT),
        last_seq, CAST(:type AS VARCHAR), CAST(:at AS TIMESTAMP WITH TIME ZONE),
        CAST(:payload AS TEXT)
    FROM counted
    RETURNING seq
    """
)


# Several entries of one order's (or trip's) log, each with its outbox event, in one
# statement: the entries in the order given (once-only, as above), then one bump of the
# aggregate's sequence counter by the number that went in, then their outbox rows
# numbered in that order. What LOG_AND_PUBLISH does for one entry, for a step that logs
# two or three. `{only_if}` may hold a condition on a CTE before these (`log_many_ctes`),
# so that a state change and its entries can share one statement.
_LOG_MANY_CTES = """
    entry AS (
        SELECT e.type, e.detail, e.once_key, e.event_id, e.n
        FROM unnest(CAST(:types AS VARCHAR[]), CAST(:details AS TEXT[]),
                    CAST(:once_keys AS VARCHAR[]), CAST(:event_ids AS VARCHAR[]))
             WITH ORDINALITY AS e(type, detail, once_key, event_id, n)
        {only_if}
    ), logged AS (
        INSERT INTO {log} ({owner}, type, detail, at, once_key)
        SELECT {owner_id}, type, detail,
            CAST(:at AS TIMESTAMP WITH TIME ZONE), once_key
        FROM entry ORDER BY n
        ON CONFLICT DO NOTHING
        RETURNING type
    ), numbered AS (
        SELECT entry.event_id, entry.type,
            row_number() OVER (ORDER BY entry.n) AS k, count(*) OVER () AS added
        FROM entry JOIN logged ON logged.type = entry.type
    ), counted AS (
        INSERT INTO outbox_sequences (aggregate, aggregate_id, last_seq)
        SELECT CAST(:aggregate AS VARCHAR), {owner_id}, count(*)
        FROM logged HAVING count(*) > 0
        ON CONFLICT (aggregate, aggregate_id)
        DO UPDATE SET last_seq = outbox_sequences.last_seq + EXCLUDED.last_seq
        RETURNING last_seq
    ), published AS (
        INSERT INTO outbox (event_id, aggregate, aggregate_id, seq, type, at, payload)
        SELECT numbered.event_id, CAST(:aggregate AS VARCHAR), {owner_id},
            counted.last_seq - numbered.added + numbered.k, numbered.type,
            CAST(:at AS TIMESTAMP WITH TIME ZONE), CAST(:payload AS TEXT)
        FROM numbered CROSS JOIN counted
        ORDER BY numbered.k
        RETURNING type
    )
"""


# Each aggregate's log: its table and the column naming the aggregate.
LOGS = {Aggregate.ORDER: ("order_events", "order_id"), Aggregate.TRIP: ("trip_events", "trip_id")}


def log_many_ctes(
    aggregate: Aggregate = Aggregate.ORDER,
    only_if: str = "",
    owner_id: str = "CAST(:owner_id AS BIGINT)",
) -> str:
    """The CTEs that log several entries of an order's (or a trip's) log and publish
    them (ending in `published`, the types that went in), for a WITH of one statement;
    `only_if` a WHERE on the entries (e.g. "WHERE EXISTS (SELECT 1 FROM moved)");
    `owner_id` the SQL naming the order or trip (a parameter, or a CTE's new row)."""
    log, owner = LOGS[aggregate]
    return _LOG_MANY_CTES.format(log=log, owner=owner, only_if=only_if, owner_id=owner_id)


LOG_AND_PUBLISH_MANY = {
    aggregate: sa.text("WITH" + log_many_ctes(aggregate) + "SELECT type FROM published")
    for aggregate in LOGS
}


def log_many_parameters(
    owner_id: int,
    entries: Sequence[tuple[str, str, str | None]],
    at: datetime,
    aggregate: Aggregate = Aggregate.ORDER,
) -> dict[str, Any]:
    """The parameters of `log_many_ctes`, for `(type, detail, once_key)` entries of the
    order (or trip) `owner_id`; each type once (an entry is matched to its outbox event
    by its type)."""
    types = [type for type, _, _ in entries]
    if len(set(types)) != len(types):
        raise ValueError(f"each entry's type once per call: {types}")
    for type in types:
        subject_of(aggregate, type)  # refuse a type that cannot be published, now
    return {
        "owner_id": owner_id,
        "types": types,
        "details": [detail for _, detail, _ in entries],
        "once_keys": [once_key for _, _, once_key in entries],
        "event_ids": [str(uuid.uuid4()) for _ in entries],
        "at": at,
        "aggregate": aggregate.value,
        "payload": check_payload({}),
    }


async def log_and_publish_many(
    db: Db,
    *,
    owner_id: int,
    entries: Sequence[tuple[str, str, str | None]],
    at: datetime,
    aggregate: Aggregate = Aggregate.ORDER,
) -> list[str]:
    """Several log entries of one order (or, with `aggregate`, one trip), `owner_id`
    naming it, `(type, detail, once_key)` each, with their outbox events, in one
    statement (PostgreSQL only). Returns the types added, in order.

    Each type appears once: an entry is matched to its outbox event by its type.
    """
    parameters = log_many_parameters(owner_id, entries, at, aggregate)
    result = await db.execute(LOG_AND_PUBLISH_MANY[aggregate], parameters)
    added = set(result.scalars())
    return [type for type in parameters["types"] if type in added]


async def log_and_publish(
    db: Db, *, order_id: int, type: str, detail: str, at: datetime, once_key: str | None
) -> bool:
    """An order's log entry and, if it went in, its outbox event, in one statement
    (PostgreSQL only). True if the entry was added."""
    subject_of(Aggregate.ORDER, type)  # refuse a type that cannot be published, now
    result = await db.execute(
        LOG_AND_PUBLISH,
        {
            "order_id": order_id,
            "type": type,
            "detail": detail,
            "at": at,
            "once_key": once_key,
            "aggregate": Aggregate.ORDER.value,
            "event_id": str(uuid.uuid4()),
            "payload": check_payload({}),
        },
    )
    return result.scalar_one_or_none() is not None


def is_postgres(db: Db) -> bool:
    return _dialect_name(db) == "postgresql"


async def add_aggregate_event(
    db: Db,
    *,
    aggregate: Aggregate,
    aggregate_id: int,
    type: str,
    payload: Mapping[str, Any],
    at: datetime,
) -> str:
    """Write the next event of any aggregate (an order, a trip) to the outbox."""
    body = check_payload(payload)
    subject_of(aggregate, type)  # refuse a type that cannot be published, now
    seq = await _next_seq(db, aggregate, aggregate_id)
    event_id = str(uuid.uuid4())
    await db.execute(
        sa.insert(outbox).values(
            event_id=event_id,
            aggregate=aggregate.value,
            aggregate_id=aggregate_id,
            seq=seq,
            type=type,
            at=at,
            payload=body,
        )
    )
    return event_id


async def add_aggregate_events(
    db: Db,
    *,
    aggregate: Aggregate,
    aggregate_id: int,
    types: Sequence[str],
    payload: Mapping[str, Any],
    at: datetime,
) -> list[str]:
    """Write several next events of one aggregate, in order, in two statements (one bump
    of its counter, one multi-row insert) rather than two per event."""
    if not types:
        return []
    body = check_payload(payload)
    for type in types:
        subject_of(aggregate, type)
    last = await _next_seq(db, aggregate, aggregate_id, by=len(types))
    first = last - len(types) + 1
    event_ids = [str(uuid.uuid4()) for _ in types]
    rows = [
        {
            "event_id": event_ids[i],
            "aggregate": aggregate.value,
            "aggregate_id": aggregate_id,
            "seq": first + i,
            "type": type,
            "at": at,
            "payload": body,
        }
        for i, type in enumerate(types)
    ]
    await db.execute(sa.insert(outbox).values(rows))
    return event_ids


async def _next_seq(db: Db, aggregate: Aggregate, aggregate_id: int, by: int = 1) -> int:
    """Bump the aggregate's counter (by `by`) and return the new value: 1 for its first
    event.

    One upsert, atomic at READ COMMITTED: a concurrent writer for the same aggregate
    waits on the counter's row lock and then sees the bumped value. A rolled-back
    transaction rolls its bump back too, so sequences have no gaps.
    """
    dialect = _dialect_name(db)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(outbox_sequences)
        .values(aggregate=aggregate.value, aggregate_id=aggregate_id, last_seq=by)
        .on_conflict_do_update(
            index_elements=[outbox_sequences.c.aggregate, outbox_sequences.c.aggregate_id],
            set_={"last_seq": outbox_sequences.c.last_seq + by},
        )
        .returning(outbox_sequences.c.last_seq)
    )
    result = await db.execute(statement)
    seq: int = result.scalar_one()
    return seq


def _dialect_name(db: Db) -> str:
    if isinstance(db, AsyncSession):
        return db.get_bind().dialect.name
    return db.dialect.name


async def oldest_unsent(db: Db, limit: int) -> list[Event]:
    """Up to `limit` unsent events, oldest first (and so in sequence within an aggregate)."""
    result = await db.execute(
        sa.select(outbox)
        .where(outbox.c.sent_at.is_(None))
        .order_by(outbox.c.outbox_id)
        .limit(limit)
    )
    return [
        Event(
            event_id=row.event_id,
            aggregate=Aggregate(row.aggregate),
            aggregate_id=row.aggregate_id,
            seq=row.seq,
            type=row.type,
            at=row.at,
            payload=json.loads(row.payload),
        )
        for row in result
    ]


async def mark_sent(db: Db, event_ids: Sequence[str], at: datetime) -> int:
    """Record that the broker acknowledged these events; returns how many were unsent."""
    if not event_ids:
        return 0
    result = await db.execute(
        sa.update(outbox)
        .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
        .values(sent_at=at)
    )
    return int(getattr(result, "rowcount", 0))


async def outbox_lag(db: Db, now: datetime) -> OutboxLag:
    """How far the bus is behind the database: unsent events and the oldest one's age."""
    unsent = outbox.c.sent_at.is_(None)
    count = (await db.execute(sa.select(sa.func.count()).where(unsent))).scalar_one()
    first = sa.select(outbox.c.at).where(unsent).order_by(outbox.c.outbox_id).limit(1)
    oldest: datetime | None = (await db.execute(first)).scalar_one_or_none()
    age = None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 1)
    return OutboxLag(unsent=count, oldest_unsent_at=oldest, oldest_age_s=age)
