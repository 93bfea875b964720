"""OpenTelemetry traces: one trace per checkout, from its HTTP request through every step.

Off unless the standard variables ask for it (`OTEL_TRACES_EXPORTER`, or an OTLP
endpoint: see `config.Tracing`); the SDK reads the rest of its `OTEL_*` variables itself.
When on:

- FastAPI's instrumentation opens a span per request, named by route template
  (`POST /checkout/{idempotency_key}`); scrapes and health checks are left out.
- DBOS's own tracing (`enable_otlp`) opens a span for the workflow and one for each
  step, `set_event`, `recv` and `sleep`, under whatever span is active. A workflow
  started from a request runs in an asyncio task that copies the request's context, so
  its spans are the request span's children without further ado. `PropagateOtelContext`
  (at the start of a checkout) also stores the trace context with the workflow, so that
  a workflow recovered in another process after a crash rejoins the same trace.
- The webhook request that wakes a checkout links to the checkout's trace
  (`link_to_workflow`): it is a trace of its own, started by the provider.
- `logs.log_context(...)` labels the active span with the order ID, checkout key and
  step (`annotate`). DBOS records no inputs or outputs on its spans, and FastAPI's
  records paths, not bodies: no payment data or address reaches a span.

The process keeps one tracer provider (OpenTelemetry allows one): the first `install`
creates it with its exporter, and later apps in the same process (tests) share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbos import DBOSConfig
from fastapi import FastAPI
from opentelemetry import trace

from widget_store.config import Settings, Tracing

ATTRIBUTE_PREFIX = "widget_store."
# Where PropagateOtelContext stores a workflow's trace context among its attributes.
DBOS_TRACE_ATTRIBUTE = "dbos.otelContext"
# Health checks and scrapes would be most of the traces and say nothing.
EXCLUDED_URLS = "/metrics,/healthz"


def trace_dbos(config: DBOSConfig, settings: Settings) -> None:
    """Turn DBOS's own tracing on with the store's. With no `otlp_traces_endpoints` of
    its own, DBOS exports through the process's tracer provider: the store's."""
    if settings.tracing is not None:
        config["enable_otlp"] = True


def install(settings: Settings, app: FastAPI) -> None:
    """Trace this app's requests (and, through `trace_dbos`, its workflows), if tracing is on."""
    if settings.tracing is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    provider = _tracer_provider(settings.tracing)
    _ensure_logger_provider(settings.tracing)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        # One span per request; not one more per chunk sent or received.
        exclude_spans=["receive", "send"],
    )


def flush() -> None:
    """Export what has ended so far (at shutdown, before the process goes)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush()


def annotate(attributes: Mapping[str, Any]) -> None:
    """Label the active span (if it records) with the store's own attributes."""
    span = trace.get_current_span()
    if attributes and span.is_recording():
        span.set_attributes({ATTRIBUTE_PREFIX + key: value for key, value in attributes.items()})


async def link_to_workflow(workflow_id: str) -> None:
    """Link the active span to the trace of the workflow it acts on: the webhook request
    that wakes a checkout, to the checkout's trace. Only when tracing is on: it reads the
    trace context the workflow was started with from DBOS (one query)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    from dbos import DBOS
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    status = await DBOS.get_workflow_status_async(workflow_id)
    carrier = (status.attributes or {}).get(DBOS_TRACE_ATTRIBUTE) if status else None
    if not isinstance(carrier, dict):
        return
    linked = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    if linked.get_span_context().is_valid:
        span.add_link(linked.get_span_context(), {ATTRIBUTE_PREFIX + "link": "wakes the checkout"})


def _tracer_provider(config: Tracing) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # this process has one already, with its exporter
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: config.service_name}))
    if config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _ensure_logger_provider(config: Tracing) -> None:
    """DBOS, traced, sends its log records to OpenTelemetry too, and warns at every launch
    when there is no logger provider: give it one, which exports with OTEL_LOGS_EXPORTER=otlp."""
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    if isinstance(get_logger_provider(), LoggerProvider):
        return
    provider = LoggerProvider(resource=Resource.create({SERVICE_NAME: config.service_name}))
    if config.export_logs:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(provider)
