"""The simulated carrier: books and cancels shipments, keyed by the store's shipment key.

Addresses are the test fixtures: one containing "invalid" is refused for good; one
containing "flaky" fails twice with a transient error and then succeeds.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from widget_store.shipping import Cancellation, ShippingRejected, ShippingUnavailable

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

# Run for every purchase: built once, the values bound per call.
_TRACKING_OF = sa.select(carrier_shipments.c.tracking_number).where(
    carrier_shipments.c.shipment_key == sa.bindparam("b_key")
)
_BOOK_SHIPMENT = sa.insert(carrier_shipments)


class SimulatedCarrier:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Failures of "flaky" addresses are counted per process: after a restart the
        # address is flaky afresh, which only makes the saga retry a little more.
        self._attempts: Counter[str] = Counter()

    async def create_shipment(self, shipment_key: str, address: str) -> str:
        """Book once per key; a repeated request returns the same tracking number."""
        lowered = address.lower()
        if "invalid" in lowered:
            raise ShippingRejected("the carrier cannot deliver to this address")
        if "flaky" in lowered:
            self._attempts[shipment_key] += 1
            if self._attempts[shipment_key] <= 2:
                raise ShippingUnavailable("the carrier is briefly unavailable")
        async with self._engine.begin() as conn:
            found = await conn.execute(_TRACKING_OF, {"b_key": shipment_key})
            tracking = found.scalar_one_or_none()
            if tracking is None:
                tracking = f"WS{secrets.token_hex(5).upper()}"
                await conn.execute(
                    _BOOK_SHIPMENT,
                    {
                        "shipment_key": shipment_key,
                        "tracking_number": tracking,
                        "address": address,
                        "status": "live",
                        "created_at": time.time(),
                    },
                )
        return tracking

    async def cancel_shipment(self, shipment_key: str) -> Cancellation:
        """Cancel a live shipment; say so when it was never booked or already cancelled."""
        table = carrier_shipments
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(table)
                .where(table.c.shipment_key == shipment_key, table.c.status == "live")
                .values(status="cancelled")
            )
            if result.rowcount == 1:
                return Cancellation.CANCELLED
            found = await conn.execute(
                sa.select(table.c.status).where(table.c.shipment_key == shipment_key)
            )
        if found.scalar_one_or_none() is None:
            return Cancellation.NEVER_BOOKED
        return Cancellation.ALREADY_CANCELLED
