"""The example consumer's projection: each order event applied once, in sequence."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.broker import event, lives, projection, rows
from widget_store.consumer import Outcome, apply_event
from widget_store.events import Event


def test_an_event_is_applied_once_in_sequence_and_an_early_one_waits(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with projection(tmp_path / "p.sqlite") as engine:
            created, reserved, shipped = lives({1: ["CreateOrder_ok", "A", "CreateShipment_ok"]})

            async def apply(e: Event) -> Outcome:
                async with engine.begin() as conn:
                    return await apply_event(conn, e)

            assert await apply(reserved) is Outcome.EARLY  # before its order's first event
            assert await apply(created) is Outcome.APPLIED
            assert await apply(created) is Outcome.DUPLICATE
            assert await apply(shipped) is Outcome.EARLY
            assert await apply(reserved) is Outcome.APPLIED
            assert await rows(engine) == {1: ("PENDING", 2, 2)}  # "A" changes no status
            assert await apply(shipped) is Outcome.APPLIED
            assert await apply(reserved) is Outcome.DUPLICATE
            assert await rows(engine) == {1: ("PAID", 3, 3)}
            # An event that names the status itself is taken at its word.
            assert await apply(event(1, 4, "Anything", status="CANCELLED")) is Outcome.APPLIED
            assert await rows(engine) == {1: ("CANCELLED", 4, 4)}

    asyncio.run(scenario())
