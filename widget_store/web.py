"""Serves the storefront's pages and assets from html/, found relative to the package,
and `/config`: the little the pages need to know about the server they talk to."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from widget_store.api.deps import SettingsDep
from widget_store.config import PROJECT_ROOT

HTML_DIR = PROJECT_ROOT / "html"
PAGES = {"/": "index.html", "/order.html": "order.html", "/ops": "ops.html"}


class PageConfigOut(BaseModel):
    demo: bool = Field(description="demo mode: the pages offer the crash button")
    admin_token_required: bool = Field(description="the /ops data needs the admin token")
    dispatch_s: float = Field(description="how long the dispatch of a paid order takes")


def _page_route(router: APIRouter, url: str, file: Path) -> None:
    async def page() -> FileResponse:
        return FileResponse(file, media_type="text/html")

    page.__doc__ = f"The {file.stem} page."
    router.add_api_route(url, page, methods=["GET"], include_in_schema=False)


def mount_web(app: FastAPI) -> None:
    router = APIRouter()
    for url, name in PAGES.items():
        _page_route(router, url, HTML_DIR / name)

    @router.get("/config", response_model=PageConfigOut, tags=["pages"])
    async def page_config(settings: SettingsDep) -> PageConfigOut:
        """What the pages need to know: demo mode (the crash button) and the dispatch time."""
        return PageConfigOut(
            demo=not settings.is_production,
            admin_token_required=settings.is_production,
            dispatch_s=settings.dispatch_s,
        )

    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Pages name their icon; this answers the browsers that ask anyway.
        return FileResponse(HTML_DIR / "static" / "favicon.svg", media_type="image/svg+xml")

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HTML_DIR / "static"), name="static")
