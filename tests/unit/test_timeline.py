"""The saga timeline built from DBOS steps and the event log, with no database at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dbos._error import DBOSMaxStepRetriesExceeded

from widget_store.timeline import MAX_TEXT, build_timeline

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def step(function_id: int, name: str, start: int, end: int | None, **extra: Any) -> Any:
    """A step as DBOS.list_workflow_steps returns it; times in ms after T0."""
    return {
        "function_id": function_id,
        "function_name": name,
        "output": extra.get("output"),
        "error": extra.get("error"),
        "child_workflow_id": None,
        "child_shard_key": None,
        "started_at_epoch_ms": T0_MS + start,
        "completed_at_epoch_ms": None if end is None else T0_MS + end,
    }


def order(*events: tuple[str, int, str], status: str = "CANCELLED") -> dict[str, Any]:
    return {
        "order_id": 7,
        "status": status,
        "payment_verdict": "failed",
        "cancel_reason": "payment declined",
        "events": [
            {"type": kind, "at": T0 + timedelta(milliseconds=ms), "detail": detail}
            for kind, ms, detail in events
        ],
    }


def workflow(status: str = "SUCCESS") -> dict[str, Any]:
    # DBOS on SQLite keeps created_at in whole seconds: a second before the first step.
    return {"status": status, "created_at": T0 - timedelta(seconds=1), "output": None}


def build(steps: list[Any], the_order: dict[str, Any], status: str = "SUCCESS") -> Any:
    return build_timeline(the_order, "key-1", workflow(status), steps, T0 + timedelta(seconds=5))


def test_times_count_from_the_first_step_not_from_the_coarse_creation_time() -> None:
    result = build([step(1, "place_order", 0, 20), step(2, "register_payment", 25, 40)], order())
    assert [(r["start_ms"], r["duration_ms"]) for r in result["rows"]] == [(0, 20), (25, 15)]
    assert result["started_at"] == T0
    assert result["duration_ms"] == 40


def test_outputs_and_errors_become_short_strings_without_stack_traces() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(" + "x" * 1000 + ")"

    try:
        raise ValueError("no good " * 100)
    except ValueError as raised:
        error = raised
    steps = [step(1, "place_order", 0, 5, output=Opaque()), step(2, "charge", 6, 9, error=error)]

    result = build(steps, order())

    json.dumps(result, default=str)  # JSON-safe
    first, second = result["rows"]
    assert first["output"].startswith("Opaque(xxx") and len(first["output"]) == MAX_TEXT
    assert second["error"].startswith("ValueError: no good") and len(second["error"]) == MAX_TEXT
    assert "Traceback" not in json.dumps(result, default=str)


def test_a_step_that_exhausted_its_retries_counts_every_attempt() -> None:
    errors: list[Exception] = [ConnectionError("refused"), TimeoutError("slow")]
    exhausted = DBOSMaxStepRetriesExceeded("request_refund", 2, errors)
    result = build([step(1, "request_refund", 0, 900, error=exhausted)], order())
    (row,) = result["rows"]
    assert row["attempts"] == 2
    assert row["failures"] == ["ConnectionError: refused", "TimeoutError: slow"]
    assert row["status"] == "failed" and row["kind"] == "compensation"


def test_a_compensation_retried_after_a_backoff_is_one_row_with_two_attempts() -> None:
    steps = [
        step(1, "release_inventory", 0, 10, error=RuntimeError("database gone")),
        step(2, "DBOS.sleep", 11, 511, output=(T0_MS + 511) / 1000),
        step(3, "release_inventory", 512, 530),
        step(4, "cancel_order", 531, 540),
    ]
    result = build(steps, order(("ReleaseReservation", 520, "1 x product 1")))
    names = [(r["name"], r["attempts"], r["status"]) for r in result["rows"]]
    assert names == [("release_inventory", 2, "ok"), ("cancel_order", 1, "ok")]
    release = result["rows"][0]
    assert release["failures"] == ["RuntimeError: database gone"]
    assert (release["start_ms"], release["duration_ms"]) == (0, 530)
    assert [e["type"] for e in release["events"]] == ["ReleaseReservation"]


def test_an_event_that_no_step_claims_gets_a_row_of_its_own_in_time_order() -> None:
    steps = [step(1, "place_order", 0, 10), step(2, "register_payment", 30, 40)]
    result = build(steps, order(("CreateOrder_ok", 5, ""), ("Audited", 20, "by hand")))
    assert [(r["name"], r["kind"]) for r in result["rows"]] == [
        ("place_order", "step"),
        ("Audited", "event"),
        ("register_payment", "step"),
    ]


def test_a_durable_sleep_says_what_it_waits_for_and_until_when() -> None:
    steps = [
        step(1, "mark_paid", 0, 10, output=(T0_MS + 2010) / 1000),
        step(2, "DBOS.sleep", 11, None, output=(T0_MS + 2010) / 1000),
    ]
    result = build(steps, order(status="PAID"), status="PENDING")
    paid, sleep = result["rows"]
    assert paid["output"] == "dispatched +2.010 s"
    assert sleep["label"] == "Dispatch (a durable sleep)"
    assert sleep["output"] == "until +2.010 s"
    assert sleep["status"] == "running"
    assert sleep["duration_ms"] == 5000 - 11
