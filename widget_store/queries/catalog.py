"""The catalog: products, their prices and their stock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from widget_store.domain import OrderStatus, Product, Reservation, Restocked, restocked
from widget_store.queries._base import Db
from widget_store.schema import order_items, orders, products


def _product(row: Any) -> Product:
    return Product(
        product_id=row.product_id,
        sku=row.sku,
        name=row.name,
        description=row.description,
        price_cents=row.price_cents,
        inventory=row.inventory,
    )


async def list_products(db: Db) -> list[Product]:
    result = await db.execute(sa.select(products).order_by(products.c.product_id))
    return [_product(row) for row in result]


async def get_product(db: Db, product_id: int) -> Product | None:
    result = await db.execute(sa.select(products).where(products.c.product_id == product_id))
    row = result.first()
    return _product(row) if row else None


async def first_product(db: Db) -> Product | None:
    result = await db.execute(sa.select(products).order_by(products.c.product_id).limit(1))
    row = result.first()
    return _product(row) if row else None


# Read by every purchase: built once, the IDs bound per call.
_PRICES_OF = sa.select(products.c.product_id, products.c.price_cents).where(
    products.c.product_id.in_(sa.bindparam("b_ids", expanding=True))
)


async def prices_of(db: Db, product_ids: Sequence[int]) -> dict[int, int]:
    result = await db.execute(_PRICES_OF, {"b_ids": list(product_ids)})
    return {row.product_id: row.price_cents for row in result}


async def product_ids_by_sku(db: Db, skus: Sequence[str]) -> dict[str, int]:
    """The products these SKUs name; an unknown SKU is missing from the answer."""
    result = await db.execute(
        sa.select(products.c.sku, products.c.product_id).where(products.c.sku.in_(list(skus)))
    )
    return {row.sku: row.product_id for row in result}


async def add_missing_products(db: AsyncConnection, new: Sequence[Product]) -> int:
    """Add each product whose SKU the catalog lacks (their IDs are ignored); returns how
    many went in. A SKU already there keeps its price and stock: running it again, or
    after shoppers bought some, changes nothing."""
    dialect = postgresql if db.dialect.name == "postgresql" else sqlite
    added = 0
    for product in new:
        result = await db.execute(
            dialect.insert(products)
            .values(
                sku=product.sku,
                name=product.name,
                description=product.description,
                price_cents=product.price_cents,
                inventory=product.inventory,
            )
            .on_conflict_do_nothing(index_elements=["sku"])
            .returning(products.c.product_id)
        )
        added += result.scalar_one_or_none() is not None
    return added


async def held_by_live_orders(db: Db) -> dict[int, int]:
    """Units each product has set aside for orders not yet dispatched (they may come back)."""
    result = await db.execute(
        sa.select(order_items.c.product_id, sa.func.sum(order_items.c.quantity).label("held"))
        .join(orders, orders.c.order_id == order_items.c.order_id)
        .where(
            orders.c.reservation == Reservation.HELD.value,
            orders.c.status != OrderStatus.DISPATCHED.value,
        )
        .group_by(order_items.c.product_id)
    )
    return {row.product_id: int(row.held) for row in result}


async def set_stock_on_hand(db: Db, on_hand: int) -> list[Restocked]:
    """Every product has `on_hand` units, counting those held by live orders.

    Rows are locked in product order first, the order reservations lock them in, so a
    restock and concurrent checkouts queue instead of deadlocking. Only then are the
    holds counted: at READ COMMITTED the count is a new statement, so it sees every
    reservation and release that committed before the locks were granted, and none can
    commit a change to these products until this transaction ends. (SQLite has one
    writer at a time: the whole transaction is that lock.)
    """
    locked = await db.execute(
        sa.select(products.c.product_id).order_by(products.c.product_id).with_for_update()
    )
    product_ids = list(locked.scalars())
    held = await held_by_live_orders(db)
    shelves = [restocked(pid, on_hand, held.get(pid, 0)) for pid in product_ids]
    for shelf in shelves:
        await db.execute(
            sa.update(products)
            .where(products.c.product_id == shelf.product_id)
            .values(inventory=shelf.available)
        )
    return shelves
