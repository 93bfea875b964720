"""Demo and operator actions: restock, the crash button, a health check."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from widget_store import queries
from widget_store.api.deps import Admin, Reader, SettingsDep, Writer
from widget_store.api.models import ErrorOut, RestockIn

router = APIRouter(tags=["admin"])

CRASH_DELAY_S = 0.05  # long enough for the reply to leave, short enough to be "at once"


@router.post("/restock", dependencies=[Admin], responses={401: {"model": ErrorOut}})
async def restock(db: Writer, body: Annotated[RestockIn | None, Body()] = None) -> dict[str, Any]:
    """Set every product's stock to `inventory` (default 100)."""
    inventory = (body or RestockIn()).inventory
    await queries.set_all_inventory(db, inventory)
    return {"inventory": inventory}


@router.post("/crash_application", status_code=202, responses={404: {"model": ErrorOut}})
async def crash_application(settings: SettingsDep) -> dict[str, str]:
    """Kill this app process at once (demo only): the supervisor restarts it."""
    if settings.is_production:
        raise HTTPException(404, "Not Found")
    loop = asyncio.get_running_loop()
    loop.call_later(CRASH_DELAY_S, os.kill, os.getpid(), signal.SIGKILL)
    return {"detail": "crashing now"}


@router.get("/healthz")
async def health(db: Reader) -> dict[str, Any]:
    """Serving, and the database answers."""
    await queries.first_product(db)
    return {"status": "ok", "pid": os.getpid()}
