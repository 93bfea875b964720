"""The store's event stream, as the rest of the business sees it: names and format, no I/O.

Every state change of an order (and, once it exists, of a trip) becomes one event in the
outbox, in the same transaction as the change. The relay publishes it on a message bus
under a subject derived from the event's aggregate and type, with the JSON envelope
below as its body. This module is that contract: the outbox writes it, the relay sends
it, a consumer reads it back with `decode`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

# Subjects are `widget_store.orders.<type>` and `widget_store.trips.<type>`.
SUBJECT_PREFIX = "widget_store"
# A small payload is the contract: ids and facts, never a document.
MAX_PAYLOAD_BYTES = 2048
# Never on the bus: whoever subscribes gets no payment data and no address.
PRIVATE_FIELDS = frozenset(
    {
        "payment_id",
        "payment_event_id",
        "refund_id",
        "card",
        "card_number",
        "shipping_address",
        "address",
    }
)
# A subject token: no dots, wildcards or spaces (the store's event names fit).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Aggregate(StrEnum):
    """What an event is about; each has its own sequence of events and its own subjects."""

    ORDER = "order"
    TRIP = "trip"

    @property
    def subject_token(self) -> str:
        return f"{self.value}s"


class EventPayloadError(ValueError):
    """An event's payload would leak private data, or is too large for the bus."""


def check_payload(payload: Mapping[str, Any]) -> str:
    """The payload as compact JSON, or EventPayloadError if it must not go on the bus.

    Checked when the event is written, so a leak fails the state change in a test
    rather than reaching every subscriber in production.
    """
    leaked = sorted(PRIVATE_FIELDS & {key.lower() for key in payload})
    if leaked:
        raise EventPayloadError(f"event payloads carry no private data: {', '.join(leaked)}")
    text = json.dumps(dict(payload), separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise EventPayloadError(f"an event payload is at most {MAX_PAYLOAD_BYTES} bytes")
    return text


def subject_of(aggregate: Aggregate, event_type: str) -> str:
    """The bus subject of an event: `widget_store.orders.ChargePayment_ok`."""
    if not _TOKEN.match(event_type):
        raise ValueError(f"event type {event_type!r} is not a valid subject token")
    return f"{SUBJECT_PREFIX}.{aggregate.subject_token}.{event_type}"


@dataclass(frozen=True)
class Event:
    """One event as it travels: the outbox row minus the relay's bookkeeping."""

    event_id: str  # a UUID; the bus's deduplication ID (Nats-Msg-Id)
    aggregate: Aggregate
    aggregate_id: int
    seq: int  # 1, 2, 3, ... per aggregate, without gaps
    type: str
    at: datetime
    payload: dict[str, Any]

    @property
    def subject(self) -> str:
        return subject_of(self.aggregate, self.type)

    @property
    def key(self) -> str:
        """The partition key: events with one key keep their order (`order-12`)."""
        return f"{self.aggregate.value}-{self.aggregate_id}"

    def encode(self) -> bytes:
        """The message body: a self-describing JSON envelope."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "aggregate": self.aggregate.value,
                "aggregate_id": self.aggregate_id,
                "seq": self.seq,
                "type": self.type,
                "at": self.at.isoformat(),
                "payload": self.payload,
            },
            separators=(",", ":"),
        ).encode()


def decode(body: bytes) -> Event:
    """Read a message body back (ValueError, KeyError or TypeError if it is not one)."""
    data = json.loads(body)
    return Event(
        event_id=str(data["event_id"]),
        aggregate=Aggregate(data["aggregate"]),
        aggregate_id=int(data["aggregate_id"]),
        seq=int(data["seq"]),
        type=str(data["type"]),
        at=datetime.fromisoformat(data["at"]),
        payload=dict(data["payload"]),
    )


@dataclass(frozen=True)
class OutboxLag:
    """How far the bus is behind the database."""

    unsent: int  # events committed but not yet acknowledged by the broker
    oldest_unsent_at: datetime | None
    oldest_age_s: float | None  # seconds since the oldest unsent event was written
