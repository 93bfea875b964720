"""The HTTP API: one router per resource, and the error mapping."""

from fastapi import APIRouter

from widget_store.api import admin, ops, orders, products, webhooks


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (products, orders, webhooks, admin, ops):
        router.include_router(module.router)
    return router
