"""Checkout and orders."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from widget_store import order_watch, queries, service
from widget_store.api.deps import (
    Admin,
    Engine,
    KnownProductsDep,
    Reader,
    SettingsDep,
    has_admin_token,
    same_secret,
)
from widget_store.api.models import CheckoutIn, CheckoutOut, ErrorOut, OrderOut, OrderPageOut
from widget_store.catalog import KnownProducts
from widget_store.domain import (
    CheckoutRequest,
    LineItem,
    NotAuthorized,
    OrderStatus,
    UnknownProduct,
)
from widget_store.durability import reading

router = APIRouter(tags=["orders"])

# The key is the checkout's workflow ID. Internal workflow IDs hold a character this
# pattern refuses (`~`, `/`, `+`), so no checkout key can take one of them.
IdempotencyKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The client's idempotency key: the same key never creates two orders.",
    ),
]
OrderToken = Annotated[
    str | None,
    Query(max_length=64, description="the order's token, from the checkout's answer"),
]
OrderId = Annotated[int, Path(ge=1, le=2**62)]
MAX_WAIT_S = 30.0


@router.post(
    "/checkout/{idempotency_key}",
    response_model=CheckoutOut,
    responses={
        409: {"model": ErrorOut, "description": "out of stock, or the key was reused"},
        503: {
            "model": ErrorOut,
            "description": "still starting, or the store is busy starting others: "
            "retry with the same key after Retry-After",
        },
    },
)
async def start_checkout(
    idempotency_key: IdempotencyKey,
    engine: Engine,
    known: KnownProductsDep,
    cart: Annotated[CheckoutIn | None, Body()] = None,
) -> dict[str, Any]:
    """Create the order and hold its stock; reply with where to pay and how to follow it."""
    # Admitted first, so that a burst past the bound costs no database work at all.
    async with service.checkout_admitted():
        request = await _checkout_request(engine, known, cart or CheckoutIn())
        view = await service.start_checkout(idempotency_key, request)
    return asdict(view)


async def _checkout_request(
    engine: AsyncEngine, known: KnownProducts, cart: CheckoutIn
) -> CheckoutRequest:
    """The cart as a checkout request, every product in it checked against the catalog
    (read only for products this process has not found before; not held while the
    saga works)."""
    if cart.items is None:
        async with reading(engine).connect() as db:
            product = await queries.first_product(db)
        if product is None:
            raise HTTPException(409, "the catalog is empty")
        items = [LineItem(product.product_id, 1)]
    else:
        items = [LineItem(line.product_id, line.quantity) for line in cart.items]
    request = CheckoutRequest.of(items, cart.shipping_address)
    unseen = known.unseen(line.product_id for line in request.items)
    if unseen:
        async with reading(engine).connect() as db:
            found = await queries.prices_of(db, unseen)
        known.found(found)
        unknown = [product_id for product_id in unseen if product_id not in found]
        if unknown:
            raise UnknownProduct(unknown)
    return request


@router.get(
    "/order/{order_id}",
    response_model=OrderOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
async def get_order(
    order_id: OrderId,
    request: Request,
    engine: Engine,
    settings: SettingsDep,
    token: OrderToken = None,
    after_events: Annotated[
        int | None,
        Query(ge=0, le=10_000, description="long poll: answer once the log is longer than this"),
    ] = None,
    after_status: Annotated[
        OrderStatus | None,
        Query(description="long poll: answer once the order's status is another than this"),
    ] = None,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="long poll: at most")] = 25,
) -> dict[str, Any]:
    """An order: status, items, tracking, dispatch progress and its event log.

    In production it needs the order's `token` (or the admin token). With
    `after_events=n`, the answer waits (up to `wait_s`) until the order's event log holds
    more than n entries: a page learns of each change at once, without polling. With
    `after_status=s`, it waits until the order's status is no longer s: a client that
    only needs the outcome (the checkout's reply says PENDING) asks once. Given both, it
    answers at the first of the two.
    """
    with order_watch.watching(order_id) as news:  # subscribe first: no news slips by
        order = await _read_order(engine, order_id)
        owner = same_secret(token, order["access_token"]) or has_admin_token(request)
        if settings.is_production and not owner:
            raise NotAuthorized("this order can be read only with its token")
        if after_events is not None or after_status is not None:
            deadline = time.monotonic() + wait_s
            recheck_s = order_watch.recheck_s(settings.workers)
            while _unchanged(order, after_events, after_status):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not await news.next(min(remaining, recheck_s)):
                    # News from another process? Every change of an order comes with an
                    # entry in its log, so a log as long as the one read is no change.
                    async with reading(engine).connect() as conn:
                        if await queries.event_count(conn, order_id) <= len(order["events"]):
                            continue
                order = await _read_order(engine, order_id)
    return _for_reader(order, owner)


def _unchanged(
    order: dict[str, Any], after_events: int | None, after_status: OrderStatus | None
) -> bool:
    """Whether a long poll has nothing new to answer yet."""
    return (after_events is None or len(order["events"]) <= after_events) and (
        after_status is None or order["status"] == after_status
    )


def _for_reader(order: dict[str, Any], owner: bool) -> dict[str, Any]:
    """What a reader may see: the payment page only for the owner of a pending order."""
    visible = dict(order)
    if not owner or order["status"] != OrderStatus.PENDING:
        visible["payment_url"] = None
    return visible


async def _read_order(engine: AsyncEngine, order_id: int) -> dict[str, Any]:
    async with reading(engine).connect() as conn:  # one statement, one snapshot on PG
        order = await queries.order_details(conn, order_id)
    if order is None:
        raise HTTPException(404, f"unknown order {order_id}")
    return order


@router.get(
    "/orders",
    response_model=OrderPageOut,
    dependencies=[Admin],
    responses={401: {"model": ErrorOut, "description": "production, without the admin token"}},
)
async def list_orders(
    db: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Recent orders, newest first; page with `?before=<next_before>` (admin in production)."""
    orders = await queries.list_orders(db, limit=limit, before=before)
    next_before = orders[-1]["order_id"] if len(orders) == limit else None
    return {"orders": orders, "next_before": next_before}
