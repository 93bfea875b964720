"""Fault-injection hooks for the chaos tests: crash right after a step, or fail inside one.

Three faults: a crash right after a step (the process dies, its checkpoint stands); a
failure inside a step (permanent, or a dropped database connection, which steps retry);
and a lost answer (the step's work is done, then its connection drops, so whoever called
cannot tell whether it happened).

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

import sqlalchemy as sa

log = logging.getLogger("widget_store.faults")

_crash_after: dict[str, int] = {}  # step name -> how many more passes before crashing
_fail_in: dict[str, int] = {}  # step name -> how many more runs raise InjectedFailure
_disconnect_in: dict[str, int] = {}  # step name -> how many more runs lose the connection
_lose_answer_of: dict[str, int] = {}  # step name -> how many more runs lose their answer


def kill_this_process() -> None:
    """What a crash is: SIGKILL, so nothing after the checkpoint runs, not even cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)


# What an armed crash does. Tests that run the store inside the test process swap in a
# stand-in that stops the running workflow without recording anything (as SIGKILL would).
crash: Callable[[], None] = kill_this_process


class InjectedFailure(Exception):
    """A failure the chaos tests asked for, raised inside a step so it is checkpointed."""


def injected_disconnect(step: str, when: str) -> sa.exc.OperationalError:
    """The error a dropped database connection raises, as SQLAlchemy wraps the driver's."""
    return sa.exc.OperationalError(
        f"-- fault injection: {step}",
        None,
        ConnectionError(f"injected: the database connection was lost {when} {step}"),
        connection_invalidated=True,
    )


def arm_crash_after(step: str, skip: int = 0) -> None:
    """Crash right after `step` completes (after its checkpoint), `skip` passes from now."""
    _crash_after[step] = skip


def arm_failure_in(step: str, times: int = 1, *, disconnect: bool = False) -> None:
    """Make the next `times` runs of `step` fail, inside the step, before its work.

    A permanent failure (`InjectedFailure`) by default; with `disconnect`, the database
    connection drops instead, which a step retries like any connection error.
    """
    (_disconnect_in if disconnect else _fail_in)[step] = times


def arm_lost_answer(step: str, times: int = 1) -> None:
    """Let the next `times` runs of `step` do their work, then lose the connection."""
    _lose_answer_of[step] = times


def disarm() -> None:
    _crash_after.clear()
    _fail_in.clear()
    _disconnect_in.clear()
    _lose_answer_of.clear()


def armed() -> dict[str, object]:
    return {
        "crash_after": dict(_crash_after),
        "fail_in": dict(_fail_in),
        "disconnect_in": dict(_disconnect_in),
        "lose_answer_of": dict(_lose_answer_of),
    }


def _take(armed: dict[str, int], step: str) -> bool:
    if armed.get(step, 0) <= 0:
        return False
    armed[step] -= 1
    if not armed[step]:
        del armed[step]
    return True


def failure_armed(step: str) -> bool:
    return step in _fail_in


def fail_now(step: str) -> None:
    """Raise the armed failure for `step`, if one is left (before the step's work)."""
    if _take(_fail_in, step):
        log.warning("fault injection: failing %s", step)
        raise InjectedFailure(f"injected failure in {step}")
    if _take(_disconnect_in, step):
        log.warning("fault injection: dropping the connection in %s", step)
        raise injected_disconnect(step, "in")


def lose_answer(step: str) -> None:
    """Raise a dropped connection after `step` did its work, if one is armed."""
    if _take(_lose_answer_of, step):
        log.warning("fault injection: losing the answer of %s", step)
        raise injected_disconnect(step, "after")


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
