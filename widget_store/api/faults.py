"""Test-only: arm a crash right after a named saga step. Mounted only with fault injection."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from widget_store import faults

router = APIRouter(prefix="/_faults", tags=["fault injection (tests only)"])


@router.post("/crash-after/{step}")
async def crash_after(
    step: Annotated[str, Path(pattern=r"^[a-z_]{1,64}$")],
    skip: Annotated[int, Query(ge=0, le=1000)] = 0,
) -> dict[str, object]:
    """Kill this process right after `step` next completes (after `skip` passes)."""
    faults.arm_crash_after(step, skip)
    return {"armed": faults.armed()}


@router.post("/fail-in/{step}")
async def fail_in(
    step: Annotated[str, Path(pattern=r"^[a-z_]{1,64}$")],
    times: Annotated[int, Query(ge=1, le=1000)] = 1,
) -> dict[str, object]:
    """Make the next `times` runs of `step` fail, inside the step."""
    faults.arm_failure_in(step, times)
    return {"armed": faults.armed()}


@router.delete("")
async def disarm() -> dict[str, object]:
    """Disarm every injected fault."""
    faults.disarm()
    return {"armed": faults.armed()}
