"""Prometheus metrics: what the store counts, the functions that count it, and /metrics' text.

Two kinds of figure, kept apart on purpose:

- **Events** (checkouts started and ended, compensations, webhook deliveries, step and
  payment-wait durations, HTTP requests) are counted in the process where they happen,
  by the recording functions below. Under `widget-store serve` every gunicorn worker
  writes its counts to files in one shared folder (prometheus-client's multiprocess
  mode, `PROMETHEUS_MULTIPROC_DIR`), and a scrape answered by any worker sums them all,
  including the counts of workers that have died since.
- **State** (checkouts waiting for payment, open dead letters, orphaned sagas) is read
  from the database when /metrics is scraped (`StoreHealth`), by whichever worker
  answers: every worker tells the same figures, nothing is summed twice, and they agree
  with the /ops page, which reads them with the same queries.

Label values are small, closed sets (outcomes, reasons, step names, route templates),
never order IDs, keys or addresses: each label value is a time series in Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from widget_store.domain import CancelReason
from widget_store.queries.health import StoreHealth

# Prometheus' own text format; every scraper accepts it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"  # the one label value anything outside a closed set falls into

# Most requests take milliseconds; the order page's long poll holds one for up to 30 s.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A step is a transaction or a provider call; one with retries (shipping) takes seconds.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
# Shoppers pay within seconds or minutes; the deadline is 15 minutes by default.
PAYMENT_WAIT_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    CANCELLED = "cancelled"


class CompensationResult(StrEnum):
    DONE = "done"  # it undid something
    NOTHING_TO_UNDO = "nothing_to_undo"  # its step had not done anything (or it ran before)
    FAILED_ATTEMPT = "failed_attempt"  # it raised; it will be retried
    PARKED = "parked"  # it kept failing and now waits in the dead letters


class WebhookResult(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the same event again, or a verdict on a decided payment
    LATE = "late"  # past the payment's deadline
    BAD_SIGNATURE = "bad_signature"
    WRONG_AMOUNT = "wrong_amount"
    UNKNOWN_PAYMENT = "unknown_payment"
    BAD_REQUEST = "bad_request"  # a body that is no webhook


CHECKOUTS_STARTED = Counter(
    "widget_store_checkouts_started", "Checkouts started (new orders; retries of a key excluded)"
)
CHECKOUTS_ENDED = Counter(
    "widget_store_checkouts_ended",
    "Checkouts that ended, by outcome and cancel reason (empty when dispatched)",
    ["outcome", "reason"],
)
COMPENSATIONS = Counter(
    "widget_store_compensations",
    "Compensation runs, by compensation and result",
    ["compensation", "result"],
)
WEBHOOK_DELIVERIES = Counter(
    "widget_store_webhook_deliveries", "Payment webhook deliveries, by result", ["result"]
)
STEP_DURATION = Histogram(
    "widget_store_step_duration_seconds",
    "Time a saga step took, by checkpoint name",
    ["checkpoint"],
    buckets=STEP_BUCKETS,
)
PAYMENT_WAIT = Histogram(
    "widget_store_payment_wait_seconds",
    "Time a checkout waited for the payment provider's verdict",
    buckets=PAYMENT_WAIT_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "widget_store_http_requests",
    "HTTP requests, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "widget_store_http_request_duration_seconds",
    "HTTP request latency, by method and route template",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)

_REASONS = frozenset(reason.value for reason in CancelReason)
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn recording on or off for this process (WIDGET_STORE_METRICS=0 turns it off)."""
    global _enabled
    _enabled = enabled


def _initialise_series() -> None:
    # A series that has never been written is absent, and a ratio over an absent series
    # is no data rather than 0: create the closed sets at 0 so alerts see them at once.
    CHECKOUTS_ENDED.labels(Outcome.DISPATCHED.value, "")
    for reason in CancelReason:
        CHECKOUTS_ENDED.labels(Outcome.CANCELLED.value, reason.value)
    for result in WebhookResult:
        WEBHOOK_DELIVERIES.labels(result.value)


_initialise_series()


# --- the recording functions the saga, the routes and the middleware call -----------------


def checkout_started() -> None:
    """A new checkout began (call once per order, not once per retry of its key)."""
    if _enabled:
        CHECKOUTS_STARTED.inc()


def checkout_ended(outcome: Outcome | str, reason: CancelReason | str | None = None) -> None:
    """A checkout reached its end: dispatched, or cancelled for `reason`."""
    if not _enabled:
        return
    outcome = Outcome(outcome)
    label = "" if outcome is Outcome.DISPATCHED or reason is None else str(reason)
    if label and label not in _REASONS:
        label = OTHER  # free text would make a series per message
    CHECKOUTS_ENDED.labels(outcome.value, label).inc()


def compensation_ran(name: str, result: CompensationResult | str) -> None:
    """One run of a compensation (`RefundPayment`, ...) and how it went."""
    if _enabled:
        COMPENSATIONS.labels(name, CompensationResult(result).value).inc()


def step_finished(checkpoint: str, seconds: float) -> None:
    """A saga step took `seconds` (record it where the step runs, not on replay)."""
    if _enabled:
        STEP_DURATION.labels(checkpoint).observe(seconds)


@contextmanager
def step_timer(checkpoint: str) -> Iterator[None]:
    """Time the enclosed block as one run of the step `checkpoint`, whether or not it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        step_finished(checkpoint, time.perf_counter() - started)


def payment_waited(seconds: float) -> None:
    """A checkout's wait for the payment verdict ended after `seconds`."""
    if _enabled:
        PAYMENT_WAIT.observe(seconds)


def webhook_delivered(result: WebhookResult | str) -> None:
    """A payment webhook delivery, by what the store made of it."""
    if _enabled:
        WEBHOOK_DELIVERIES.labels(WebhookResult(result).value).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request, labelled by its route template (never its raw path)."""
    if not _enabled:
        return
    method = method if method in HTTP_METHODS else OTHER
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


# --- state read from the database at scrape time ----------------------------------------


def health_families(health: StoreHealth) -> list[Metric]:
    gauges = [
        (
            "widget_store_checkouts_waiting_for_payment",
            "Checkouts waiting for the payment provider's verdict",
            health.waiting_for_payment,
        ),
        (
            "widget_store_oldest_waiting_checkout_age_seconds",
            "Age of the oldest checkout waiting for payment (0 when none waits)",
            health.oldest_waiting_age_s,
        ),
        (
            "widget_store_checkouts_past_payment_deadline",
            "Checkouts still waiting for payment although their deadline has passed",
            health.past_payment_deadline,
        ),
        (
            "widget_store_dead_letters_open",
            "Compensations parked after repeated failures and not yet resolved",
            health.dead_letters_open,
        ),
        (
            "widget_store_orphaned_sagas",
            "DBOS workflows PENDING or ENQUEUED on an executor or application version "
            "that no live process of this deployment serves",
            health.orphaned_sagas,
        ),
        (
            "widget_store_outbox_unsent_events",
            "Order events committed but not yet acknowledged by the broker",
            health.outbox.unsent,
        ),
        (
            "widget_store_outbox_oldest_unsent_age_seconds",
            "Age of the oldest event not yet acknowledged by the broker (0 when none)",
            health.outbox.oldest_age_s or 0.0,
        ),
    ]
    return [GaugeMetricFamily(name, text, value=value) for name, text, value in gauges]


class _Fixed(Collector):
    """Hands a scrape the families it was built with."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Forward(Collector):
    """This process's own metrics (and its process_* figures), in single-process mode."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(state: Iterable[Metric], multiprocess_dir: Path | None) -> bytes:
    """The /metrics body: every worker's counts (or this process's own), then `state`.

    Reads every worker's file in multiprocess mode, so it belongs off the event loop.
    """
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir is not None:
        MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward())
    registry.register(_Fixed(state))
    return generate_latest(registry)
