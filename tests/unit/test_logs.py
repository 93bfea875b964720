"""Logs: one JSON object per line with WIDGET_STORE_LOG_FORMAT=json, naming the order,
checkout and step wherever the code knew them, and the trace when there is one."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from widget_store.config import LogFormat
from widget_store.logs import JsonFormatter, configure, current_context, log_context


@contextmanager
def json_lines(logger_name: str) -> Iterator[io.StringIO]:
    """What `logger_name` logs meanwhile, through the store's JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_the_context_it_was_logged_in() -> None:
    log = logging.getLogger("widget_store.test_logs")
    log.setLevel(logging.INFO)
    with json_lines(log.name) as stream:
        log.info("before")
        with log_context(order_id=7, checkout_key="key-7"):
            with log_context(step="charge_payment"):
                log.warning("declined, %s", "sadly")
            log.info("after the step", extra={"order_id": 8})
        try:
            raise ValueError("two\nlines")
        except ValueError:
            log.exception("failed")

    first, inner, after, failed = entries(stream)
    assert set(first) == {"time", "level", "logger", "message", "pid"}
    assert first["time"].endswith("+00:00") and first["message"] == "before"
    assert inner["level"] == "WARNING" and inner["message"] == "declined, sadly"
    assert (inner["order_id"], inner["checkout_key"], inner["step"]) == (
        7,
        "key-7",
        "charge_payment",
    )
    assert after["order_id"] == 8 and "step" not in after, "extra= wins; the inner block ended"
    assert "step" not in failed and "ValueError: two\nlines" in failed["exception"]
    assert len(stream.getvalue().splitlines()) == 4, "a traceback stays on its record's line"
    assert current_context() == {}


def test_a_record_inside_a_span_names_its_trace_and_the_span_gets_the_context() -> None:
    tracer = TracerProvider().get_tracer("test")  # not the process's provider
    log = logging.getLogger("widget_store.test_logs")
    with (
        json_lines(log.name) as stream,
        tracer.start_as_current_span("step") as span,
        log_context(order_id=3, step="create_shipment"),
    ):
        log.warning("carrier slow")
    (entry,) = entries(stream)
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "widget_store.order_id": 3,
        "widget_store.step": "create_shipment",
    }


def test_configure_installs_one_handler_however_often_it_runs() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        configure(LogFormat.TEXT)
        configure(LogFormat.TEXT)
        ours = [h for h in root.handlers if h.get_name() == "widget-store"]
        assert len(ours) == 1 and not isinstance(ours[0].formatter, JsonFormatter)
    finally:
        root.handlers = saved
