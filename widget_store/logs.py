"""Logs: readable text by default, one JSON object per line with WIDGET_STORE_LOG_FORMAT=json.

A JSON line carries `time`, `level`, `logger` and `message`, and, wherever the code that
logged knew them, the `order_id`, `checkout_key` and `step` it was working on, the DBOS
`workflow_id`, and the `trace_id` and `span_id` of the active span when tracing is on.
Code names what it works on once, with `log_context(...)`, rather than in every message;
the names travel with the asyncio task (a context variable), into the steps DBOS runs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from opentelemetry import trace

from widget_store import tracing
from widget_store.config import LogFormat

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "widget-store"
CONTEXT_FIELDS = ("order_id", "checkout_key", "step", "compensation")

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "widget_store_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(
    *,
    order_id: int | None = None,
    checkout_key: str | None = None,
    step: str | None = None,
    compensation: str | None = None,
) -> Iterator[None]:
    """Name the order, checkout and step (or compensation) the enclosed code works on.

    Log records inside carry them, and so does the active trace span (as
    `widget_store.order_id`, ...): call it inside a DBOS step to label that step's span.
    Nested blocks add to the outer one's names. Never pass payment data or addresses.
    """
    given = {
        "order_id": order_id,
        "checkout_key": checkout_key,
        "step": step,
        "compensation": compensation,
    }
    named = {key: value for key, value in given.items() if value is not None}
    merged = MappingProxyType({**_context.get(), **named})
    token = _context.set(merged)
    tracing.annotate(dict(merged))  # the span (a step's, say) gets the outer names too
    try:
        yield
    finally:
        _context.reset(token)


def name_for_the_rest(*, order_id: int | None = None) -> None:
    """Name the order for the rest of the running task (a workflow, once its order exists).

    A task runs in a copy of its creator's context, so this labels that workflow only.
    """
    if order_id is not None:
        _context.set(MappingProxyType({**_context.get(), "order_id": order_id}))
        tracing.annotate({"order_id": order_id})


def current_context() -> Mapping[str, Any]:
    """What the innermost `log_context` names."""
    return _context.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        context = _context.get()
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)  # logger.info(..., extra={...}) wins
            if value is None:
                value = context.get(field)
            if value is not None:
                entry[field] = value
        workflow_id = getattr(record, "operationUUID", None)  # DBOS's log filter adds it
        if workflow_id:
            entry["workflow_id"] = workflow_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)


def configure(log_format: LogFormat) -> None:
    """Send the root logger's records (the store's, Alembic's, ...) to stderr in `log_format`,
    and in JSON DBOS's too, which otherwise keeps a text handler of its own.

    Gunicorn's loggers get the same formatter from `widget_store.cli`. Calling this again
    replaces the handler it installed rather than adding a second.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(logging.INFO)
    if log_format is LogFormat.JSON:
        # DBOS adds its console handler only to a logger that has none, and does not
        # propagate: hand it ours first.
        dbos = logging.getLogger("dbos")
        dbos.handlers = [handler]
        dbos.propagate = False
