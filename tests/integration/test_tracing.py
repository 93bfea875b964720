"""Traces, with the OpenTelemetry SDK's in-memory exporter: one trace per checkout, the
POST /checkout request span the parent of the workflow span and of every step under it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from dbos import DBOS
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.helpers import Store, cart, eventually, new_key
from widget_store.config import Settings, Tracing

ADDRESS = "42 Hidden Lane, Secretville"  # must never reach a span


@pytest.fixture(scope="session")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (OpenTelemetry allows one), exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def traced_store(settings: Settings, exporter: InMemorySpanExporter) -> Iterator[Store]:
    # The exporter named here is never built: the process has its provider already.
    with Store.running(replace(settings, tracing=Tracing(exporter="console"))) as store:
        exporter.clear()
        yield store


def spans_of_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def wait_for_span(exporter: InMemorySpanExporter, name: str, timeout: float = 10) -> ReadableSpan:
    found = eventually(
        lambda: [s for s in exporter.get_finished_spans() if s.name == name],
        timeout=timeout,
        what=lambda: f"a span {name!r} among {[s.name for s in exporter.get_finished_spans()]}",
    )
    return found[-1]


def test_a_paid_checkout_is_one_trace_from_its_request_through_every_step(
    traced_store: Store, exporter: InMemorySpanExporter
) -> None:
    key = new_key()
    placed = traced_store.checkout(cart((1, 1), address=ADDRESS), key=key).json()
    assert traced_store.choose(placed["payment_url"], "pay").status_code == 303
    traced_store.wait_for(placed["order_id"], "DISPATCHED")
    workflow = wait_for_span(exporter, "checkout.v2")

    request = next(
        s for s in exporter.get_finished_spans() if s.name == "POST /checkout/{idempotency_key}"
    )
    assert request.parent is None, "the checkout's request span is the trace's root"
    assert request.attributes is not None
    assert request.attributes["widget_store.checkout_key"] == key
    assert workflow.parent is not None and workflow.parent.span_id == request.context.span_id
    assert workflow.attributes is not None
    assert workflow.attributes["operationUUID"] == key  # DBOS: the workflow ID

    in_trace = spans_of_trace(exporter, request.context.trace_id)
    under_workflow = [
        s for s in in_trace if s.parent is not None and s.parent.span_id == workflow.context.span_id
    ]
    steps = [s for s in under_workflow if (s.attributes or {}).get("operationType") == "step"]
    assert len(steps) >= 3, [s.name for s in under_workflow]
    # The durable wait for the payment is a span of its own, under the workflow too.
    assert "recv" in {s.name for s in under_workflow}
    # Every DBOS span of this checkout is in this trace, under its workflow span.
    dbos_spans = [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("operationUUID") == key
    ]
    assert {s.context.trace_id for s in dbos_spans} == {request.context.trace_id}
    assert all(s in under_workflow or s is workflow for s in dbos_spans)

    # The provider's webhook is a trace of its own, linked to the checkout's.
    webhook = wait_for_span(exporter, "POST /payment_webhook/{payment_id}/{payment_status}")
    assert webhook.context.trace_id != request.context.trace_id
    assert [link.context.trace_id for link in webhook.links] == [request.context.trace_id]

    for span in exporter.get_finished_spans():
        values = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        assert not [v for v in values if "Hidden Lane" in v], span.name


def test_the_checkouts_trace_context_is_stored_with_its_workflow_for_recovery(
    traced_store: Store, exporter: InMemorySpanExporter
) -> None:
    key = new_key()
    traced_store.checkout(cart((1, 1)), key=key)
    request = wait_for_span(exporter, "POST /checkout/{idempotency_key}")

    status = DBOS.get_workflow_status(key)
    assert status is not None
    carrier = (status.attributes or {}).get("dbos.otelContext", {})
    trace_id = trace.format_trace_id(request.context.trace_id)
    assert carrier.get("traceparent", "").split("-")[1] == trace_id


def test_scrapes_and_health_checks_make_no_traces(
    traced_store: Store, exporter: InMemorySpanExporter
) -> None:
    traced_store.http.get("/metrics")
    traced_store.http.get("/healthz")
    traced_store.http.get("/products")
    wait_for_span(exporter, "GET /products")
    assert {s.name for s in exporter.get_finished_spans()} == {"GET /products"}


def test_a_declined_checkouts_trace_shows_its_compensations_marked_as_such(
    traced_store: Store, exporter: InMemorySpanExporter
) -> None:
    key = new_key()
    placed = traced_store.checkout(cart((1, 1), address=ADDRESS), key=key).json()
    assert traced_store.choose(placed["payment_url"], "decline").status_code == 303
    traced_store.wait_for(placed["order_id"], "CANCELLED")
    workflow = wait_for_span(exporter, "checkout.v2")

    under_workflow = [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == workflow.context.span_id
    ]
    undone = {
        s.name: (s.attributes or {}).get("widget_store.compensation")
        for s in under_workflow
        if (s.attributes or {}).get("widget_store.compensation")
    }
    assert undone == {
        "refund_payment": "RefundPayment",
        "release_inventory": "ReleaseReservation",
        "cancel_order": "CancelOrder",
    }
    assert all(
        (s.attributes or {}).get("widget_store.order_id") == placed["order_id"]
        for s in under_workflow
        if s.name in undone
    )
