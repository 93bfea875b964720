"""Fault-injection hooks for the chaos tests: crash right after a step, or fail inside one.

Inert unless the app was built with `WIDGET_STORE_FAULT_INJECTION=1` (refused in
production): until then `after_step` is a dictionary lookup on an empty dictionary.
Arming lives in this process's memory only, so the replacement process that recovers the
workflow is not armed and does not crash again at the same place. The hook also fires
when a recovered workflow replays a recorded step, so arm a process only once the
workflows it recovers have finished.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger("widget_store.faults")

_crash_after: dict[str, int] = {}  # step name -> how many more passes before crashing
_fail_in: dict[str, int] = {}  # step name -> how many more runs raise InjectedFailure


def kill_this_process() -> None:
    """What a crash is: SIGKILL, so nothing after the checkpoint runs, not even cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)


# What an armed crash does. Tests that run the store inside the test process swap in a
# stand-in that stops the running workflow without recording anything (as SIGKILL would).
crash: Callable[[], None] = kill_this_process


class InjectedFailure(Exception):
    """A failure the chaos tests asked for, raised inside a step so it is checkpointed."""


def arm_crash_after(step: str, skip: int = 0) -> None:
    """Crash right after `step` completes (after its checkpoint), `skip` passes from now."""
    _crash_after[step] = skip


def arm_failure_in(step: str, times: int = 1) -> None:
    """Make the next `times` runs of `step` fail, inside the step, so DBOS records it."""
    _fail_in[step] = times


def disarm() -> None:
    _crash_after.clear()
    _fail_in.clear()


def armed() -> dict[str, object]:
    return {"crash_after": dict(_crash_after), "fail_in": dict(_fail_in)}


def failure_armed(step: str) -> bool:
    return step in _fail_in


def fail_now(step: str) -> None:
    """Raise the armed failure for `step`, if one is left."""
    if _fail_in.get(step, 0) > 0:
        _fail_in[step] -= 1
        if not _fail_in[step]:
            del _fail_in[step]
        log.warning("fault injection: failing %s", step)
        raise InjectedFailure(f"injected failure in {step}")


def after_step(step: str) -> None:
    """Called by the saga after each step and compensation has been checkpointed."""
    if step not in _crash_after:
        return
    if _crash_after[step] > 0:
        _crash_after[step] -= 1
        return
    del _crash_after[step]
    log.warning("fault injection: crashing after %s", step)
    crash()
