"""The catalog: products, their prices and their stock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from widget_store.domain import Product
from widget_store.queries._base import Db
from widget_store.schema import products


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


async def prices_of(db: Db, product_ids: Sequence[int]) -> dict[int, int]:
    result = await db.execute(
        sa.select(products.c.product_id, products.c.price_cents).where(
            products.c.product_id.in_(list(product_ids))
        )
    )
    return {row.product_id: row.price_cents for row in result}


async def set_all_inventory(db: Db, inventory: int) -> None:
    await db.execute(sa.update(products).values(inventory=inventory))
