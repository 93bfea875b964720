"""The shipping-service boundary, and the simulated carrier this demo runs.

The carrier keeps its own table of shipments keyed by the store's idempotency key, so
asking twice for the same shipment returns the same tracking number. Addresses are the
test fixtures: one containing "invalid" is rejected for good, one containing "flaky"
fails twice with a transient error and then succeeds.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

carrier_metadata = sa.MetaData()

carrier_shipments = sa.Table(
    "carrier_shipments",
    carrier_metadata,
    sa.Column("shipment_key", sa.String(64), primary_key=True),
    sa.Column("tracking_number", sa.String(64), nullable=False, unique=True),
    sa.Column("address", sa.Text, nullable=False),
    # live -> cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


class ShippingUnavailable(Exception):
    """A transient failure: worth retrying with backoff."""


class ShippingRejected(Exception):
    """A permanent failure (an undeliverable address): retrying cannot help."""


class ShippingService(Protocol):
    async def create_shipment(self, shipment_key: str, address: str) -> str:
        """Book a shipment and return its tracking number. Idempotent by key."""
        ...

    async def cancel_shipment(self, shipment_key: str) -> bool:
        """Cancel a booked shipment; cancelling twice, or a shipment never booked, is fine."""
        ...


class SimulatedCarrier:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Failures of "flaky" addresses are counted per process: after a restart the
        # address is flaky afresh, which only makes the saga retry a little more.
        self._attempts: Counter[str] = Counter()

    async def create_shipment(self, shipment_key: str, address: str) -> str:
        lowered = address.lower()
        if "invalid" in lowered:
            raise ShippingRejected("the carrier cannot deliver to this address")
        if "flaky" in lowered:
            self._attempts[shipment_key] += 1
            if self._attempts[shipment_key] <= 2:
                raise ShippingUnavailable("the carrier is briefly unavailable")
        table = carrier_shipments
        async with self._engine.begin() as conn:
            found = await conn.execute(
                sa.select(table.c.tracking_number).where(table.c.shipment_key == shipment_key)
            )
            tracking = found.scalar_one_or_none()
            if tracking is None:
                tracking = f"WS{secrets.token_hex(5).upper()}"
                await conn.execute(
                    sa.insert(table).values(
                        shipment_key=shipment_key,
                        tracking_number=tracking,
                        address=address,
                        status="live",
                        created_at=time.time(),
                    )
                )
        return tracking

    async def cancel_shipment(self, shipment_key: str) -> bool:
        table = carrier_shipments
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(table)
                .where(table.c.shipment_key == shipment_key, table.c.status == "live")
                .values(status="cancelled")
            )
        return result.rowcount == 1
