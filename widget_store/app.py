"""create_app(): the one place that wires DBOS, the database, the adapters and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from dbos import DBOS, AsyncSQLAlchemyDatasource
from fastapi import FastAPI

from widget_store import __version__, durability, metrics, steps, tracing, watchdog
from widget_store.api import COMMON_ERRORS, api_router
from widget_store.api import faults as faults_api
from widget_store.api import metrics as metrics_api
from widget_store.api.errors import install_error_handlers
from widget_store.config import Settings
from widget_store.middleware import BodySizeLimit, RequestMetrics, SecurityHeaders
from widget_store.payments import PaymentProvider
from widget_store.provider import SimulatedPaymentProvider, provider_router
from widget_store.shipping import ShippingService, SimulatedCarrier
from widget_store.web import mount_web


def create_app(
    settings: Settings,
    *,
    payments: Callable[[PaymentProvider], PaymentProvider] | None = None,
    shipping: Callable[[ShippingService], ShippingService] | None = None,
) -> FastAPI:
    """Build the store on the simulated provider and carrier.

    `payments` and `shipping`, if given, wrap those adapters (tests use them to make an
    outside service misbehave).
    """
    settings.check_safe_to_start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = durability.internal_queue()
        durability.pace_dbos_background_work()
        dbos_config = durability.dbos_config(settings)
        tracing.trace_dbos(dbos_config, settings)
        DBOS(config=dbos_config)
        datasource = await AsyncSQLAlchemyDatasource.create(
            settings.database.async_url, engine_kwargs=_engine_kwargs(settings)
        )
        engine = datasource.engine
        provider = SimulatedPaymentProvider(
            engine,
            settings.webhook_secret,
            lambda: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://widget-store.internal"
            ),
        )
        carrier = SimulatedCarrier(engine)
        app.state.settings = settings
        app.state.engine = engine
        app.state.provider = provider
        steps.install(
            steps.CheckoutServices(
                datasource=datasource,
                payments=payments(provider) if payments else provider,
                shipping=shipping(carrier) if shipping else carrier,
                payment_timeout_s=settings.payment_timeout_s,
                dispatch_s=settings.dispatch_s,
                isolation_level="SERIALIZABLE" if settings.database.is_sqlite else "READ COMMITTED",
                compensation_attempts=settings.compensation_attempts,
                dead_letter_retry_s=settings.dead_letter_retry_s,
                app_version=settings.app_version,
                executors=settings.executors,
                stuck_after_s=settings.stuck_after_s,
            )
        )
        DBOS.launch()
        watchdog.schedule()
        background = [
            asyncio.create_task(durability.slow_down_after_recovery(queue)),
            asyncio.create_task(provider.keep_redelivering()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            DBOS.destroy()
            await engine.dispose()
            tracing.flush()

    logging.getLogger("widget_store").setLevel(settings.log_level)
    app = FastAPI(
        title="Widget Store",
        version=__version__,
        description="A crash-proof storefront: every checkout is a durable DBOS saga.",
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit)
    metrics.set_enabled(settings.metrics)
    if settings.metrics:
        app.add_middleware(RequestMetrics, record=metrics.http_request)  # outermost: sees all
    install_error_handlers(app)
    app.include_router(api_router())
    if settings.metrics:
        app.include_router(metrics_api.router)
    if settings.fault_injection:
        app.include_router(faults_api.router)
    app.include_router(provider_router(lambda request: request.app.state.provider, COMMON_ERRORS))
    mount_web(app)
    tracing.install(settings, app)
    return app


def _engine_kwargs(settings: Settings) -> dict[str, Any]:
    if settings.database.is_sqlite:
        return {}
    return {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
