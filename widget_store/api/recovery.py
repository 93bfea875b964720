"""Stuck sagas, for operators: parked compensations with a retry, and the watchdog on demand."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from widget_store import queries, service
from widget_store.api.deps import Admin, Reader
from widget_store.api.models import ErrorOut

router = APIRouter(prefix="/ops", tags=["operations"], dependencies=[Admin])


class DeadLetterOut(BaseModel):
    dead_letter_id: int
    order_id: int | None = Field(None, description="the order it belongs to, or None")
    trip_id: int | None = Field(None, description="the trip it belongs to, or None")
    workflow_id: str
    compensation: str
    last_error: str
    attempts: int
    status: str
    parked_at: datetime
    updated_at: datetime


class RetryOut(BaseModel):
    dead_letter_id: int
    status: str


@router.get(
    "/dead-letters", response_model=list[DeadLetterOut], responses={401: {"model": ErrorOut}}
)
async def list_dead_letters(
    db: Reader, include_resolved: Annotated[bool, Query()] = False
) -> list[dict[str, Any]]:
    """Compensations parked after repeated failures (newest first)."""
    return await queries.list_dead_letters(db, include_resolved=include_resolved)


@router.post(
    "/dead-letters/{dead_letter_id}/retry",
    response_model=RetryOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def retry_dead_letter(
    dead_letter_id: Annotated[int, Path(ge=1, le=2**62)],
) -> dict[str, Any]:
    """Try a parked compensation again now."""
    return await service.retry_dead_letter(dead_letter_id)


class WatchdogOut(BaseModel):
    checked: int
    resumed: list[int]
    resolved: list[int]
    failed: list[int] = Field(description="orders that could not be looked after; next pass")


@router.post("/watchdog", response_model=WatchdogOut, responses={401: {"model": ErrorOut}})
async def run_watchdog() -> dict[str, Any]:
    """Run a watchdog pass now: resume or resolve orders no live workflow drives."""
    report = await service.run_watchdog()
    return {
        "checked": report.checked,
        "resumed": report.resumed,
        "resolved": report.resolved,
        "failed": report.failed,
    }
