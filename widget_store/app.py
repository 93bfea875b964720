"""create_app(): the one place that wires DBOS, the database, the adapters and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from dbos import DBOS
from fastapi import FastAPI

from widget_store import __version__, durability, metrics, tracing, watchdog
from widget_store.admission import Admission, Progress
from widget_store.api import COMMON_ERRORS, api_router
from widget_store.api import faults as faults_api
from widget_store.api import metrics as metrics_api
from widget_store.api.errors import install_error_handlers
from widget_store.catalog import KnownProducts
from widget_store.config import Settings
from widget_store.jetstream import JetStreamBroker
from widget_store.legacy import v1 as legacy_v1
from widget_store.legacy import watchdog_v2 as legacy_watchdog_v2
from widget_store.middleware import BodySizeLimit, RequestMetrics, SecurityHeaders
from widget_store.news_feed import NewsFeed
from widget_store.payments import PaymentProvider
from widget_store.relay import Relay
from widget_store.shipping import ShippingService
from widget_store.simulated.carrier import SimulatedCarrier
from widget_store.simulated.provider import SimulatedPaymentProvider
from widget_store.simulated.provider_page import provider_router
from widget_store.simulated.travel import travel_services
from widget_store.travel import TravelService, TripLeg
from widget_store.trip import book_trip_workflow
from widget_store.web import mount_web

log = logging.getLogger("widget_store.app")
# Imported for their registrations: version 0.1's workflows, for the checkouts it started,
# and the watchdog pass before it paged, for a pass cut short.
REGISTERED_LEGACY = (
    legacy_v1.checkout_workflow,
    legacy_v1.resolve_order,
    legacy_watchdog_v2.watchdog_v2_workflow,
)
REGISTERED_TRIPS = (book_trip_workflow,)
TravelWrapper = Callable[[TripLeg, TravelService], TravelService]


def create_app(
    settings: Settings,
    *,
    payments: Callable[[PaymentProvider], PaymentProvider] | None = None,
    shipping: Callable[[ShippingService], ShippingService] | None = None,
    travel: TravelWrapper | None = None,
) -> FastAPI:
    """Build the store on the simulated provider, carrier and travel services.

    `payments`, `shipping` and `travel`, if given, wrap those adapters (tests use them to
    make an outside service misbehave).
    """
    settings.check_safe_to_start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = durability.internal_queue()
        durability.pace_dbos_background_work()
        dbos_config = durability.dbos_config(settings)
        tracing.trace_dbos(dbos_config, settings)
        DBOS(config=dbos_config)
        engine = durability.create_store_engine(settings)
        # The outside world's writes take the write lock up front too (SQLite).
        provider = SimulatedPaymentProvider(
            durability.writer(engine),
            settings.webhook_secret,
            lambda: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://widget-store.internal"
            ),
        )
        carrier = SimulatedCarrier(durability.writer(engine))
        trip_services: dict[TripLeg, TravelService] = dict(
            travel_services(durability.writer(engine))
        )
        if travel is not None:
            trip_services = {leg: travel(leg, svc) for leg, svc in trip_services.items()}
        app.state.settings = settings
        app.state.engine = engine
        app.state.provider = provider
        app.state.known_products = KnownProducts()
        progress = app.state.progress = Progress()
        durability.install(
            durability.CheckoutServices(
                engine=engine,
                payments=payments(provider) if payments else provider,
                shipping=shipping(carrier) if shipping else carrier,
                payment_timeout_s=settings.payment_timeout_s,
                dispatch_s=settings.dispatch_s,
                compensation_attempts=settings.compensation_attempts,
                dead_letter_retry_s=settings.dead_letter_retry_s,
                app_version=settings.app_version,
                executors=settings.executors,
                stuck_after_s=settings.stuck_after_s,
                admission=Admission(settings.starting_checkout_limit),
                progress=progress,
                travel=trip_services,
            )
        )
        DBOS.launch()
        watchdog.schedule()
        await watchdog.take_over_earlier_versions()
        background = [
            asyncio.create_task(durability.slow_down_after_recovery(queue)),
            asyncio.create_task(provider.keep_redelivering(settings.provider_redeliver_s)),
        ]
        if not settings.database.is_sqlite:  # DBOS polls every waiter on SQLite anyway
            background.append(asyncio.create_task(durability.sweep_missed_wake_ups()))
        if not settings.database.is_sqlite and settings.workers > 1:  # others to hear
            feed = app.state.news_feed = NewsFeed(settings.database.async_url)
            background.append(asyncio.create_task(feed.run()))
        relay = _outbox_relay(settings)
        relaying = asyncio.create_task(relay.run()) if relay else None
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            if relaying is not None:
                relaying.cancel()
                # Let it close its session, which hands the lead to another process now.
                await asyncio.wait([relaying], timeout=5)
            DBOS.destroy()
            await _cancelled_work_finished()
            await engine.dispose()
            tracing.flush()

    logging.getLogger("widget_store").setLevel(settings.log_level)
    docs = not settings.is_production or settings.public_docs
    app = FastAPI(
        title="Widget Store",
        version=__version__,
        description="A crash-proof storefront: every checkout is a durable DBOS saga.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
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
    if settings.mounts_simulated_provider:
        if settings.is_production:
            log.warning(
                "WIDGET_STORE_STAGING=1: the simulated payment provider is mounted; "
                "anyone with a payment link can pay or decline that payment for free"
            )
        app.include_router(
            provider_router(lambda request: request.app.state.provider, COMMON_ERRORS)
        )
    mount_web(app)
    tracing.install(settings, app)
    return app


# How long a stopping app waits for the work it cancelled to wind down.
CANCELLED_WORK_WAIT_S = 2.0


async def _cancelled_work_finished() -> None:
    """Let the tasks just cancelled (the background loops, and the workflows DBOS.destroy
    cancels) finish winding down before the pool is disposed and the loop closes.

    A cancelled step may still have a statement in a database driver's thread (aiosqlite
    runs each connection in one); its answer, and the rollback after it, need the loop
    that is about to close. Without this wait the driver's thread fails to deliver to a
    closed loop ("Event loop is closed"). Tasks nobody cancelled are not waited for.
    """
    await asyncio.sleep(0)  # a cancellation requested from another thread lands first
    current = asyncio.current_task()
    cancelled = [task for task in asyncio.all_tasks() if task is not current and task.cancelling()]
    if cancelled:
        await asyncio.wait(cancelled, timeout=CANCELLED_WORK_WAIT_S)


def _outbox_relay(settings: Settings) -> Relay | None:
    """The relay to NATS, if WIDGET_STORE_NATS_URL names one; without it the outbox fills.

    Every app process runs one; a PostgreSQL advisory lock lets one of them publish.
    """
    nats_url = settings.nats_url
    if nats_url is None:
        return None
    name = f"relay-{settings.executor_id}"
    return Relay(
        settings.database.async_url,
        lambda: JetStreamBroker.connect(nats_url, name=name),
        name=name,
        poll_s=settings.outbox_poll_s,
    )
