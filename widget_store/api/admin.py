"""Demo and operator actions: restock, the crash button, a health check."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request

from widget_store import queries
from widget_store.admission import Progress
from widget_store.api.deps import Admin, Reader, SettingsDep, Writer
from widget_store.api.models import ErrorOut, RestockIn, RestockOut
from widget_store.domain import StoreStalled

router = APIRouter(tags=["admin"])

CRASH_DELAY_S = 0.05  # long enough for the reply to leave, short enough to be "at once"


@router.post(
    "/restock",
    response_model=RestockOut,
    dependencies=[Admin],
    responses={401: {"model": ErrorOut}},
)
async def restock(db: Writer, body: Annotated[RestockIn | None, Body()] = None) -> dict[str, Any]:
    """Say every product has `inventory` units on hand (default 100), counting those held
    by orders not yet dispatched: the shelf gets the rest, never below zero."""
    inventory = (body or RestockIn()).inventory
    shelves = await queries.set_stock_on_hand(db, inventory)
    return {"inventory": inventory, "products": [asdict(shelf) for shelf in shelves]}


@router.post("/crash_application", status_code=202, responses={404: {"model": ErrorOut}})
async def crash_application(settings: SettingsDep) -> dict[str, str]:
    """Kill this app process at once (demo only): the supervisor restarts it."""
    if settings.is_production:
        raise HTTPException(404, "Not Found")
    loop = asyncio.get_running_loop()
    loop.call_later(CRASH_DELAY_S, os.kill, os.getpid(), signal.SIGKILL)
    return {"detail": "crashing now"}


@router.get("/healthz", responses={503: {"model": ErrorOut}})
async def health(db: Reader, request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Serving, the database answers, and work in flight is finishing (503 otherwise)."""
    await queries.first_product(db)
    progress: Progress = request.app.state.progress
    stalled_s = progress.stalled_for()
    if stalled_s > settings.unhealthy_after_s:
        raise StoreStalled(
            f"checkouts are not making progress: {progress.in_flight} in flight, "
            f"none finished for {stalled_s:.0f} s"
        )
    return {"status": "ok", "pid": os.getpid(), "in_flight": progress.in_flight}
