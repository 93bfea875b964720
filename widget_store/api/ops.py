"""The operations view's data: aggregates, recent orders by stage, and saga timelines.

Every route here needs the admin token in production (`Admin`); the demo leaves them open.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from widget_store import queries, timeline
from widget_store.api.deps import Admin, Reader, SettingsDep
from widget_store.api.models import ErrorOut
from widget_store.domain import StageFilter, TripStatus
from widget_store.queries import ops as ops_queries
from widget_store.queries import trips as trip_queries
from widget_store.queries.health import store_health

router = APIRouter(
    prefix="/ops",
    tags=["operations"],
    dependencies=[Admin],
    responses={401: {"model": ErrorOut, "description": "production, without the admin token"}},
)


class LastHourOut(BaseModel):
    finished: int = Field(description="orders that ended (dispatched or cancelled)")
    compensated: int = Field(description="of those, the ones the saga undid")
    compensation_ratio: float | None = Field(description="compensated / finished")


class OldestWaitingOut(BaseModel):
    order_id: int
    created_at: datetime
    age_s: float
    payment_deadline: datetime | None


class OutboxLagOut(BaseModel):
    unsent: int = Field(description="events committed but not yet acknowledged by the broker")
    oldest_unsent_at: datetime | None
    oldest_age_s: float | None = Field(description="age of the oldest unsent event")


class StuckOut(BaseModel):
    past_payment_deadline: int = Field(description="still waiting although the deadline passed")
    dead_letters_open: int = Field(description="compensations parked, not yet resolved")
    orphaned_sagas: int = Field(
        description="workflows pending on an executor or version no live process serves"
    )


class SummaryOut(BaseModel):
    counts: dict[str, int] = Field(description="orders by status")
    waiting_for_payment: int
    last_hour: LastHourOut
    oldest_waiting: OldestWaitingOut | None = Field(description="the oldest unpaid order")
    outbox: OutboxLagOut = Field(description="how far the event stream is behind")
    stuck: StuckOut = Field(description="the figures /metrics reports as health gauges")
    now: datetime


class OpsOrderOut(BaseModel):
    order_id: int
    status: str
    stage: str = Field(description="starting, waiting_for_payment, settling, dispatching, ...")
    total_cents: int
    cancel_reason: str | None
    created_at: datetime
    age_s: float


class OpsOrderPageOut(BaseModel):
    orders: list[OpsOrderOut]
    next_before: int | None = Field(description="pass as ?before= for the next page")


class TimelineEventOut(BaseModel):
    type: str
    detail: str
    at_ms: float | None


class TimelineRowOut(BaseModel):
    function_id: int = Field(description="the DBOS step's ID; -1 for a row that is no step")
    name: str
    label: str
    kind: str = Field(description="step, compensation, wait, internal or event")
    status: str = Field(description="ok, failed or running")
    start_ms: float | None = Field(description="milliseconds after the first step started")
    duration_ms: float | None
    attempts: int
    output: str | None
    error: str | None
    failures: list[str] = Field(description="the errors of the attempts that failed")
    events: list[TimelineEventOut]


class WorkflowOut(BaseModel):
    status: str
    name: str
    created_at: datetime | None
    completed_at: datetime | None
    recovery_attempts: int | None
    executor_id: str | None
    app_version: str | None
    output: str | None
    error: str | None


class TimelineOut(BaseModel):
    order_id: int
    workflow_id: str
    order_status: str
    stage: str
    cancel_reason: str | None
    workflow: WorkflowOut | None
    started_at: datetime | None
    duration_ms: float | None
    compensations: int
    rows: list[TimelineRowOut]


@router.get("/summary", response_model=SummaryOut)
async def summary(db: Reader, settings: SettingsDep) -> dict[str, Any]:
    """Orders by status, the last hour's compensation ratio, the oldest unpaid order, the
    health figures /metrics reports, and how far the event stream is behind."""
    health = await store_health(
        db, datetime.now(UTC), executors=settings.executors, app_version=settings.app_version
    )
    return await ops_queries.summary(db, health)


@router.get("/orders", response_model=OpsOrderPageOut)
async def recent_orders(
    db: Reader,
    stage: StageFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Recent orders, newest first, optionally in one stage; page with `?before=`."""
    orders = await ops_queries.recent_orders(
        db, datetime.now(UTC), stage=stage, limit=limit, before=before
    )
    next_before = orders[-1]["order_id"] if len(orders) == limit else None
    return {"orders": orders, "next_before": next_before}


@router.get(
    "/orders/{order_id}/timeline",
    response_model=TimelineOut,
    responses={404: {"model": ErrorOut}},
)
async def saga_timeline(
    order_id: Annotated[int, Path(ge=1, le=2**62)], db: Reader
) -> dict[str, Any]:
    """The order's saga, step by step, read from DBOS and joined with its event log."""
    order = await queries.order_details(db, order_id)
    workflow_id = await ops_queries.workflow_id_of(db, order_id)
    if order is None or workflow_id is None:
        raise HTTPException(404, f"unknown order {order_id}")
    await db.close()  # DBOS reads its own tables; don't hold a pooled connection meanwhile
    return await timeline.saga_timeline(order, workflow_id)


# --- trips, beside the orders --------------------------------------------------------------


class OpsTripOut(BaseModel):
    trip_id: int
    status: str = Field(description="PENDING, BOOKED or ROLLED_BACK")
    user_id: str
    reason: str | None
    created_at: datetime
    age_s: float


class OpsTripPageOut(BaseModel):
    trips: list[OpsTripOut]
    counts: dict[str, int] = Field(description="trips by status")
    next_before: int | None = Field(description="pass as ?before= for the next page")


class TripTimelineOut(BaseModel):
    trip_id: int
    workflow_id: str
    trip_status: str
    finished: bool
    reason: str | None
    workflow: WorkflowOut | None
    started_at: datetime | None
    duration_ms: float | None
    compensations: int
    rows: list[TimelineRowOut]


@router.get("/trips", response_model=OpsTripPageOut)
async def recent_trips(
    db: Reader,
    status: TripStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Recent trips, newest first, optionally in one status; page with `?before=`."""
    now = datetime.now(UTC)
    rows = await trip_queries.recent_trips(db, status=status, limit=limit, before=before)
    trips = [
        {
            "trip_id": row.trip_id,
            "status": row.status,
            "user_id": row.user_id,
            "reason": row.reason,
            "created_at": row.created_at,
            "age_s": round(max(0.0, (now - row.created_at).total_seconds()), 1),
        }
        for row in rows
    ]
    next_before = trips[-1]["trip_id"] if len(trips) == limit else None
    counts = await trip_queries.trip_counts(db)
    return {"trips": trips, "counts": counts, "next_before": next_before}


@router.get(
    "/trips/{trip_id}/timeline",
    response_model=TripTimelineOut,
    responses={404: {"model": ErrorOut}},
)
async def trip_timeline(
    trip_id: Annotated[int, Path(ge=1, le=2**62)], db: Reader
) -> dict[str, Any]:
    """The trip's saga, step by step, read from DBOS and joined with its history."""
    trip = await trip_queries.trip_details(db, trip_id)
    if trip is None:
        raise HTTPException(404, f"unknown trip {trip_id}")
    await db.close()  # DBOS reads its own tables; don't hold a pooled connection meanwhile
    return await timeline.trip_timeline(trip, trip["trip_key"])
