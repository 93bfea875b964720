"""The catalog."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from widget_store import queries
from widget_store.api.deps import Reader
from widget_store.api.models import ErrorOut, ProductOut

router = APIRouter(tags=["catalog"])

ProductId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/products", response_model=list[ProductOut])
async def list_products(db: Reader) -> list[dict[str, object]]:
    """Every product, with its live stock."""
    return [asdict(p) for p in await queries.list_products(db)]


@router.get(
    "/products/{product_id}", response_model=ProductOut, responses={404: {"model": ErrorOut}}
)
async def get_product(product_id: ProductId, db: Reader) -> dict[str, object]:
    """One product."""
    product = await queries.get_product(db, product_id)
    if product is None:
        raise HTTPException(404, f"unknown product {product_id}")
    return asdict(product)


@router.get("/product", response_model=ProductOut, responses={404: {"model": ErrorOut}})
async def first_product(db: Reader) -> dict[str, object]:
    """The first product (the classic single-widget demo's endpoint)."""
    product = await queries.first_product(db)
    if product is None:
        raise HTTPException(404, "the catalog is empty")
    return asdict(product)
