"""Serves the storefront's pages and assets from html/, found relative to the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from widget_store.config import PROJECT_ROOT

HTML_DIR = PROJECT_ROOT / "html"
PAGES = {"/": "index.html", "/order.html": "order.html"}


def _page_route(router: APIRouter, url: str, file: Path) -> None:
    async def page() -> FileResponse:
        return FileResponse(file, media_type="text/html")

    page.__doc__ = f"The {file.stem} page."
    router.add_api_route(url, page, methods=["GET"], include_in_schema=False)


def mount_web(app: FastAPI) -> None:
    router = APIRouter()
    for url, name in PAGES.items():
        _page_route(router, url, HTML_DIR / name)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HTML_DIR / "static"), name="static")
