"""The HTTP API's request and response bodies (pydantic): the OpenAPI page documents them."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from widget_store.domain import (
    DEFAULT_SHIPPING_ADDRESS,
    MAX_ADDRESS_LENGTH,
    MAX_LINES,
    MAX_QUANTITY,
    MAX_TRIP_ATTEMPTS,
    MAX_TRIP_ITEM_LENGTH,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductOut(BaseModel):
    product_id: int
    sku: str
    name: str
    description: str
    price_cents: int
    inventory: int


class LineIn(Strict):
    product_id: Annotated[int, Field(ge=1, le=2**62, strict=True)]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY, strict=True)]


class CheckoutIn(Strict):
    """A cart. No body (or `{}`) buys one unit of the first product."""

    items: Annotated[list[LineIn] | None, Field(min_length=1, max_length=MAX_LINES)] = None
    shipping_address: Annotated[str, Field(min_length=1, max_length=MAX_ADDRESS_LENGTH)] = (
        DEFAULT_SHIPPING_ADDRESS
    )

    @field_validator("shipping_address")
    @classmethod
    def printable_address(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the shipping address is empty")
        if any(unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("the shipping address contains control characters")
        return value


class CheckoutOut(BaseModel):
    order_id: int
    payment_id: str = Field(description="for the provider's verdict (`widget-store webhook`)")
    payment_url: str | None = Field(description="the payment page; only while PENDING")
    status: str
    order_token: str = Field(description="proves you placed the order: reading it needs it")
    order_url: str = Field(description="the order page, with the token")


class OrderItemOut(BaseModel):
    product_id: int
    quantity: int
    unit_price_cents: int


class OrderEventOut(BaseModel):
    type: str
    at: datetime
    detail: str


class OrderOut(BaseModel):
    order_id: int
    status: str
    items: list[OrderItemOut]
    total_cents: int
    shipping_address: str
    payment_url: str | None = Field(
        None, description="the payment page, shown only to the order's owner while PENDING"
    )
    payment_verdict: str | None
    payment_deadline: datetime | None
    tracking_number: str | None
    progress_remaining: float | None
    cancel_reason: str | None
    created_at: datetime
    events: list[OrderEventOut]


class OrderSummaryOut(BaseModel):
    order_id: int
    status: str
    total_cents: int
    cancel_reason: str | None
    tracking_number: str | None
    created_at: datetime


class OrderPageOut(BaseModel):
    orders: list[OrderSummaryOut]
    next_before: int | None = Field(description="pass as ?before= for the next page")


class WebhookIn(Strict):
    """What a signed webhook authorises: this event, on this payment, with this verdict."""

    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    payment_id: Annotated[str, Field(min_length=1, max_length=64)]
    status: Literal["paid", "failed"]
    amount_cents: Annotated[int, Field(ge=0, le=2**62, strict=True)]


class WebhookOut(BaseModel):
    order_id: int
    status: str


class RestockIn(Strict):
    inventory: Annotated[
        int,
        Field(
            ge=0,
            le=1_000_000,
            strict=True,
            description="units on hand of every product, counting those held by live orders",
        ),
    ] = 100


class RestockedOut(BaseModel):
    product_id: int
    on_hand: int = Field(description="what the restock said is there")
    held: int = Field(description="units set aside for orders not yet dispatched")
    available: int = Field(description="on the shelf for shoppers: on_hand - held, at least 0")


class RestockOut(BaseModel):
    inventory: int
    products: list[RestockedOut]


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, in words")


def _printable_item(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError("contains control characters")
    return value


TripItem = Annotated[str, Field(min_length=1, max_length=MAX_TRIP_ITEM_LENGTH, strict=True)]


class TripIn(Strict):
    """A trip: who travels, the car, hotel and flight to book, and how often to try each."""

    user_id: TripItem
    car_id: TripItem
    hotel_id: TripItem
    flight_id: TripItem
    attempts: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_TRIP_ATTEMPTS,
            strict=True,
            description="calls to each service before giving up on a transient failure",
        ),
    ]

    @field_validator("user_id", "car_id", "hotel_id", "flight_id")
    @classmethod
    def printable(cls, value: str) -> str:
        return _printable_item(value)


class TripStateOut(BaseModel):
    trip_id: int
    status: str = Field(description="BOOKED or ROLLED_BACK (PENDING while it runs)")
    bookings: dict[str, str] = Field(
        description="car, hotel, flight: what each service confirmed (cancelled since, if "
        "the trip was rolled back)"
    )
    cancelled: list[str] = Field(description="the undos that ran, newest leg first")
    reason: str | None = Field(description="why the trip was rolled back")


class TripOut(TripStateOut):
    trip_token: str = Field(description="proves you booked the trip: reading it needs it")
    trip_url: str = Field(description="the trip and its history, with the token")


class TripEventOut(BaseModel):
    type: str
    at: datetime
    detail: str


class TripDetailsOut(TripStateOut):
    user_id: str
    items: dict[str, str] = Field(description="car, hotel, flight: what was asked for")
    attempts: int
    created_at: datetime
    updated_at: datetime
    events: list[TripEventOut]
