"""Where compensations that keep failing wait: visible to operators, retried on request.

The saga (`saga.Saga`) parks a compensation after repeated failures. Parking records it
in `dead_letters` and in the order's event log, then the workflow waits on a DBOS topic
for an operator's retry (`/ops/api/dead-letters/{id}/retry`), or retries by itself after
`dead_letter_retry_s`. The workflow stays PENDING while parked, so the order never ends
half-compensated without somebody being able to see it.
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS

from widget_store import queries
from widget_store.domain import DeadLetterNotFound, DeadLetterNotParked, OrderEvent
from widget_store.steps import services, session, transaction

RETRY_TOPIC = "compensation_retry"


class ParkedCompensations:
    """The saga's dead-letter policy for one order."""

    def __init__(self, order_id: int, workflow_id: str) -> None:
        self.order_id = order_id
        self.workflow_id = workflow_id

    async def park(self, compensation: str, error: str, attempts: int) -> None:
        await transaction(
            "park_compensation",
            _park,
            self.order_id,
            self.workflow_id,
            compensation,
            error,
            attempts,
        )
        await DBOS.recv_async(RETRY_TOPIC, timeout_seconds=services().dead_letter_retry_s)
        await transaction("retry_compensation", _retrying, self.order_id, compensation)

    async def resolved(self, compensation: str) -> None:
        await transaction("resolve_compensation", _resolved, self.order_id, compensation)


async def _park(
    order_id: int, workflow_id: str, compensation: str, error: str, attempts: int
) -> None:
    db = session()
    await queries.park_dead_letter(
        db,
        order_id=order_id,
        workflow_id=workflow_id,
        compensation=compensation,
        error=error,
        attempts=attempts,
    )
    detail = f"{compensation} after {attempts} failed attempts: {error}"[:500]
    await queries.append_event(db, order_id, OrderEvent.COMPENSATION_PARKED, detail)


async def _retrying(order_id: int, compensation: str) -> None:
    db = session()
    await queries.set_dead_letter_status(db, order_id, compensation, "retrying")
    await queries.append_event(db, order_id, OrderEvent.COMPENSATION_RETRIED, compensation)


async def _resolved(order_id: int, compensation: str) -> None:
    await queries.set_dead_letter_status(session(), order_id, compensation, "resolved")


async def request_retry(dead_letter_id: int) -> dict[str, Any]:
    """An operator asks for a parked compensation to be tried again now."""
    async with services().datasource.engine.connect() as conn:
        row = await queries.dead_letter(conn, dead_letter_id)
    if row is None:
        raise DeadLetterNotFound(f"unknown dead letter {dead_letter_id}")
    if row.status != "parked":
        raise DeadLetterNotParked(f"dead letter {dead_letter_id} is {row.status}, not parked")
    await DBOS.send_async(
        row.workflow_id,
        "retry",
        RETRY_TOPIC,
        idempotency_key=f"retry-{dead_letter_id}-{row.attempts}",
    )
    return {"dead_letter_id": dead_letter_id, "status": "retry requested"}
