"""What route handlers get from the app: settings and database connections.

Every dependency is `async def`, even the ones that only look something up: FastAPI runs a
plain `def` dependency in its thread pool, a hop to a worker thread and back for each one
on every request.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from widget_store.catalog import KnownProducts
from widget_store.config import Settings
from widget_store.durability import reading
from widget_store.durability import writer as writing


def settings_of(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def engine_of(request: Request) -> AsyncEngine:
    value: AsyncEngine = request.app.state.engine
    return value


async def settings(request: Request) -> Settings:
    return settings_of(request)


async def engine(request: Request) -> AsyncEngine:
    return engine_of(request)


async def known_products(request: Request) -> KnownProducts:
    """The products this app has found in the catalog (widget_store/catalog.py)."""
    value: KnownProducts = request.app.state.known_products
    return value


async def reader(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for reads, outside any transaction on PostgreSQL (`reading`)."""
    async with reading(engine_of(request)).connect() as conn:
        yield conn


async def writer(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that commits when the handler returns (on SQLite it
    takes the write lock when it begins, so that reading before writing cannot fail)."""
    async with writing(engine_of(request)).begin() as conn:
        yield conn


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of two secrets, safe for any text a client may send."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def has_admin_token(request: Request) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same_secret(given, settings_of(request).admin_token)


async def require_admin(request: Request) -> None:
    """In production, operator actions need `Authorization: Bearer <WIDGET_STORE_ADMIN_TOKEN>`.

    The demo leaves them open, so that anyone trying the store can restock it.
    """
    if settings_of(request).is_production and not has_admin_token(request):
        raise HTTPException(
            401, "this action needs the admin bearer token", {"WWW-Authenticate": "Bearer"}
        )


SettingsDep = Annotated[Settings, Depends(settings)]
Admin = Depends(require_admin)
Reader = Annotated[AsyncConnection, Depends(reader)]
Engine = Annotated[AsyncEngine, Depends(engine)]
KnownProductsDep = Annotated[KnownProducts, Depends(known_products)]
Writer = Annotated[AsyncConnection, Depends(writer)]
