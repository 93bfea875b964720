"""create_app(): the one place that wires DBOS, the database, the adapters and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig
from dbos._dbos import _get_or_create_dbos_registry
from dbos._utils import INTERNAL_QUEUE_NAME
from fastapi import FastAPI

from widget_store import __version__, steps, watchdog
from widget_store.api import COMMON_ERRORS, api_router
from widget_store.api import faults as faults_api
from widget_store.api.errors import install_error_handlers
from widget_store.config import Settings
from widget_store.middleware import BodySizeLimit, SecurityHeaders
from widget_store.payments import PaymentProvider
from widget_store.provider import SimulatedPaymentProvider, provider_router
from widget_store.shipping import ShippingService, SimulatedCarrier
from widget_store.web import mount_web

APP_NAME = "widget-store"
# Without LISTEN/NOTIFY, SQLite hands messages over by polling; DBOS's default of 1 s
# makes one checkout round trip take about 3 s.
SQLITE_POLL_INTERVAL_S = 0.01
INTERNAL_QUEUE_POLL_S = 5.0


def dbos_config(settings: Settings) -> DBOSConfig:
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": settings.database.system_url,
        # Pinned, so that a restart after a code change still recovers in-flight orders.
        "application_version": settings.app_version,
        "executor_id": settings.executor_id,
        "log_level": settings.log_level,
    }
    if settings.database.is_sqlite:
        config["notification_listener_polling_interval_sec"] = SQLITE_POLL_INTERVAL_S
    return config


def _poll_the_internal_queue_less() -> None:
    """Scheduled and resumed workflows go through DBOS's internal queue, which DBOS polls
    every second by default: a database transaction a second, for work that is never
    urgent here (the watchdog, an orphan being resumed). Declared before launch, so DBOS
    uses this queue object instead of creating its own."""
    _get_or_create_dbos_registry()._register_internal_queue(
        INTERNAL_QUEUE_NAME, polling_interval_sec=INTERNAL_QUEUE_POLL_S
    )


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
        _poll_the_internal_queue_less()
        DBOS(config=dbos_config(settings))
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
        redelivery = asyncio.create_task(provider.keep_redelivering())
        try:
            yield
        finally:
            redelivery.cancel()
            DBOS.destroy()
            await engine.dispose()

    logging.getLogger("widget_store").setLevel(settings.log_level)
    app = FastAPI(
        title="Widget Store",
        version=__version__,
        description="A crash-proof storefront: every checkout is a durable DBOS saga.",
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit)
    install_error_handlers(app)
    app.include_router(api_router())
    if settings.fault_injection:
        app.include_router(faults_api.router)
    app.include_router(provider_router(lambda request: request.app.state.provider, COMMON_ERRORS))
    mount_web(app)
    return app


def _engine_kwargs(settings: Settings) -> dict[str, Any]:
    if settings.database.is_sqlite:
        return {}
    return {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
