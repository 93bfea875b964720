"""What route handlers get from the app: settings and database connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from widget_store.config import Settings


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def engine(request: Request) -> AsyncEngine:
    value: AsyncEngine = request.app.state.engine
    return value


async def reader(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for reads; it never commits (reads cost no commit in PostgreSQL)."""
    async with engine(request).connect() as conn:
        yield conn


async def writer(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that commits when the handler returns."""
    async with engine(request).begin() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(settings)]
Reader = Annotated[AsyncConnection, Depends(reader)]
Writer = Annotated[AsyncConnection, Depends(writer)]
