"""The shipping-service boundary: what the store needs from a carrier.

`widget_store/simulated/carrier.py` is the carrier this demo runs. Every call is keyed by
the store's shipment key, so asking twice books once and cancelling twice cancels once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from widget_store.domain import ShippingRejected, ShippingUnavailable

__all__ = ["Cancellation", "ShippingRejected", "ShippingService", "ShippingUnavailable"]


class Cancellation(StrEnum):
    """What the carrier found when asked to cancel a shipment."""

    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    NEVER_BOOKED = "never_booked"


class ShippingService(Protocol):
    async def create_shipment(self, shipment_key: str, address: str) -> str:
        """Book a shipment and return its tracking number. Idempotent by key.

        Raises ShippingRejected for an address it will never deliver to, and
        ShippingUnavailable when it fails or times out (it may have booked anyway).
        """
        ...

    async def cancel_shipment(self, shipment_key: str) -> Cancellation:
        """Cancel the shipment booked under this key, whatever state it is in."""
        ...
