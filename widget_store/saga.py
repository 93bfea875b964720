"""A small, reusable saga helper for DBOS workflows.

Register each step's undo *before* running the step, so a step that did its work but
crashed before its checkpoint is still undone. On failure, `rollback` runs the undos
newest first, each retried with durable backoff until it succeeds: a compensation that
fails must not leave stock or money stranded.

A compensation that keeps failing (a refund endpoint down for hours) is not retried in
a tight loop forever: after `park_after` attempts it is handed to a `DeadLetters`
policy, which records it somewhere an operator can see it and waits for a retry. It
never silently disappears.

An undo must be idempotent as a whole and made only of DBOS steps (a datasource
transaction, a `DBOS.step`), so that replaying the workflow after a crash takes the
same path: a failed attempt is checkpointed as failed, and the durable sleep between
attempts survives restarts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dbos import DBOS

Undo = Callable[..., Awaitable[object]]  # called with its arguments, then the reason


@dataclass(frozen=True, slots=True)
class Compensation:
    """One registered undo: `undo(*args, reason)`. Kept small (slots, no closure): a
    checkout waiting for its payment holds three of these for as long as it waits."""

    name: str
    undo: Undo
    args: tuple[Any, ...] = ()

    def run(self, reason: str) -> Awaitable[object]:
        return self.undo(*self.args, reason)


class DeadLetters(Protocol):
    async def park(self, compensation: str, error: str, attempts: int) -> None:
        """Make the stuck compensation visible, then wait until it should be tried again."""
        ...

    async def resolved(self, compensation: str) -> None:
        """The parked compensation finally succeeded."""
        ...


class Saga:
    # Slots: a checkout waiting for its payment holds its saga for as long as it waits.
    __slots__ = (
        "_compensations",
        "_dead_letters",
        "_first_delay_s",
        "_max_delay_s",
        "_park_after",
        "_sleep",
    )

    def __init__(
        self,
        *,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        park_after: int | None = None,
        dead_letters: DeadLetters | None = None,
        sleep: Callable[[float], Awaitable[None]] = DBOS.sleep_async,
    ) -> None:
        self._compensations: list[Compensation] = []
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._park_after = park_after
        self._dead_letters = dead_letters
        self._sleep = sleep  # durable by default; tests pass a plain one

    def use_dead_letters(self, dead_letters: DeadLetters) -> None:
        """Where to park compensations that keep failing (once there is somewhere)."""
        self._dead_letters = dead_letters

    def on_rollback(self, name: str, undo: Undo, *args: Any) -> None:
        """Remember how to undo the step about to run: `undo(*args, reason)`."""
        self._compensations.append(Compensation(name, undo, args))

    @property
    def pending(self) -> list[str]:
        """The compensations a rollback would run now, in the order it would run them."""
        return [c.name for c in reversed(self._compensations)]

    async def rollback(self, reason: str) -> None:
        """Undo every registered step, newest first; each undo runs until it succeeds."""
        while self._compensations:
            compensation = self._compensations.pop()
            await self._until_done(compensation, reason)

    async def _until_done(self, compensation: Compensation, reason: str) -> None:
        delay = self._first_delay_s
        attempts = 0
        parked = False
        while True:
            try:
                await compensation.run(reason)
            except Exception as error:
                attempts += 1
                DBOS.logger.warning(
                    "compensation %s failed (attempt %d): %r", compensation.name, attempts, error
                )
                if self._dead_letters and self._park_after and attempts % self._park_after == 0:
                    parked = True
                    await self._dead_letters.park(compensation.name, repr(error), attempts)
                    delay = self._first_delay_s  # a retry after parking starts afresh
                    continue
                await self._sleep(delay)
                delay = min(delay * 2, self._max_delay_s)
                continue
            if parked and self._dead_letters:
                await self._dead_letters.resolved(compensation.name)
            return
