"""A fault-injection hook for the chaos tests: crash the process right after a named step.

Inert unless the app was built with `WIDGET_STORE_FAULT_INJECTION=1` (refused in
production): until then `after_step` is a dictionary lookup on an empty dictionary.
Arming lives in this process's memory only, so the replacement process that recovers the
workflow is not armed and does not crash again at the same place.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("widget_store.faults")

_crash_after: dict[str, int] = {}  # step name -> how many more passes before crashing


def arm_crash_after(step: str, skip: int = 0) -> None:
    """Crash right after `step` completes (after its checkpoint), `skip` passes from now."""
    _crash_after[step] = skip


def disarm() -> None:
    _crash_after.clear()


def armed() -> dict[str, int]:
    return dict(_crash_after)


def after_step(step: str) -> None:
    """Called by the saga after each step and compensation has been checkpointed."""
    if step not in _crash_after:
        return
    if _crash_after[step] > 0:
        _crash_after[step] -= 1
        return
    del _crash_after[step]
    log.warning("fault injection: crashing after %s", step)
    os.kill(os.getpid(), signal.SIGKILL)
