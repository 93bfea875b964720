"""The recording functions the saga calls: closed label sets, timing that survives errors."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from widget_store import metrics
from widget_store.metrics import CompensationResult, Outcome


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_cancel_reason_outside_the_known_ones_is_counted_as_other() -> None:
    name = "widget_store_checkouts_ended_total"
    before = sample(name, outcome="cancelled", reason="other")
    metrics.checkout_ended(Outcome.CANCELLED, "the carrier's van caught fire on Elm Street")
    assert sample(name, outcome="cancelled", reason="other") - before == 1
    before = sample(name, outcome="dispatched", reason="")
    metrics.checkout_ended("dispatched", "ignored for a dispatched order")
    assert sample(name, outcome="dispatched", reason="") - before == 1


def test_compensations_are_counted_by_name_and_result() -> None:
    name = "widget_store_compensations_total"
    labels = {"compensation": "RefundPayment", "result": "nothing_to_undo"}
    before = sample(name, **labels)
    metrics.compensation_ran("RefundPayment", CompensationResult.NOTHING_TO_UNDO)
    assert sample(name, **labels) - before == 1
    with pytest.raises(ValueError):
        metrics.compensation_ran("RefundPayment", "mostly worked")


def test_a_step_is_timed_even_when_it_fails() -> None:
    name = "widget_store_step_duration_seconds_count"
    before = sample(name, checkpoint="charge_payment")
    with pytest.raises(RuntimeError), metrics.step_timer("charge_payment"):
        raise RuntimeError("the provider is down")
    assert sample(name, checkpoint="charge_payment") - before == 1


def test_the_payment_wait_is_a_histogram_in_seconds() -> None:
    before = sample("widget_store_payment_wait_seconds_bucket", le="10.0")
    metrics.payment_waited(7.5)
    assert sample("widget_store_payment_wait_seconds_bucket", le="10.0") - before == 1
