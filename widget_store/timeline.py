"""The saga timeline of one order: what its DBOS workflow did, step by step.

DBOS checkpoints every step a workflow takes (name, output or error, start and end) in
its system tables; the store logs what each step did to the order in `order_events`.
This module reads the first, attaches each event to the step that wrote it, folds the
retried attempts of a step into one row, and makes everything JSON-safe: outputs and
errors become short strings (a repr, or an error's type and message, never a stack
trace), and times become milliseconds from the workflow's first step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from dbos import DBOS, StepInfo, WorkflowStatus

from widget_store.checkpoints import Checkpoint
from widget_store.domain import OrderEvent as E
from widget_store.domain import Stage, TripStatus, stage_of
from widget_store.domain import TripEvent as T

MAX_TEXT = 300
SLEEP = "DBOS.sleep"
ACTIVE_WORKFLOW = ("PENDING", "ENQUEUED", "DELAYED")


@dataclass(frozen=True)
class Clock:
    """Turns epoch milliseconds into milliseconds since the timeline's zero."""

    zero_ms: float

    def at(self, epoch_ms: float) -> float:
        return round(epoch_ms - self.zero_ms, 1)

    def maybe(self, epoch_ms: float | None) -> float | None:
        return None if epoch_ms is None else self.at(epoch_ms)


class Kind(StrEnum):
    STEP = "step"
    COMPENSATION = "compensation"
    WAIT = "wait"
    INTERNAL = "internal"
    EVENT = "event"  # a logged event that no step claims


@dataclass(frozen=True)
class Role:
    kind: Kind
    label: str
    events: tuple[E | T, ...] = ()  # what this step logs to the order's event log
    output_is_time: str | None = None  # the output is an epoch time: say what it marks


C = Checkpoint
# Every checkpoint a checkout or its resolution may record (this version's and 0.1's),
# and the DBOS operations the workflows make.
ROLES: dict[str, Role] = {
    C.PLACE_ORDER: Role(
        Kind.STEP,
        "Create the order, reserve stock, open the payment",
        (E.ORDER_CREATED, E.RESERVED, E.RESERVE_FAILED, E.PAYMENT_OPENED),
    ),
    "DBOS.recv": Role(Kind.WAIT, "Wait for the provider's verdict"),
    SLEEP: Role(Kind.WAIT, "Durable sleep", output_is_time="until"),
    C.EXPIRE_PAYMENT: Role(Kind.STEP, "The payment deadline passed", (E.CHARGE_FAILED,)),
    C.SHIP_ORDER: Role(
        Kind.STEP,
        "Book the shipment, mark paid, start the dispatch",
        (E.SHIPMENT_CREATED, E.SHIPMENT_FAILED, E.DISPATCH_STARTED),
    ),
    C.COMPLETE_DISPATCH: Role(Kind.STEP, "Complete the dispatch", (E.DISPATCHED, E.COMPLETE)),
    C.CANCEL_SHIPMENT: Role(
        Kind.COMPENSATION, "Cancel the shipment at the carrier", (E.SHIPMENT_CANCELLED,)
    ),
    C.REFUND_PAYMENT: Role(Kind.COMPENSATION, "Refund or void the payment", (E.PAYMENT_REFUNDED,)),
    C.RELEASE_INVENTORY: Role(
        Kind.COMPENSATION, "Release the reserved stock", (E.RESERVATION_RELEASED,)
    ),
    C.CANCEL_ORDER: Role(Kind.COMPENSATION, "Cancel the order", (E.ORDER_CANCELLED, E.FAILED)),
    C.PARK_COMPENSATION: Role(
        Kind.COMPENSATION, "Park a failing compensation", (E.COMPENSATION_PARKED,)
    ),
    C.RETRY_COMPENSATION: Role(
        Kind.COMPENSATION, "Retry the parked compensation", (E.COMPENSATION_RETRIED,)
    ),
    C.RESOLVE_COMPENSATION: Role(Kind.COMPENSATION, "The parked compensation succeeded"),
    C.READ_ORDER_STATUS: Role(Kind.INTERNAL, "Read the order's status"),
    # The trip saga.
    C.BOOK_CAR: Role(
        Kind.STEP, "Create the trip, rent the car", (T.REQUESTED, T.CAR_BOOKED, T.CAR_FAILED)
    ),
    C.BOOK_HOTEL: Role(Kind.STEP, "Book the hotel", (T.HOTEL_BOOKED, T.HOTEL_FAILED)),
    C.BOOK_FLIGHT: Role(Kind.STEP, "Book the flight", (T.FLIGHT_BOOKED, T.FLIGHT_FAILED, T.BOOKED)),
    C.CANCEL_FLIGHT: Role(Kind.COMPENSATION, "Cancel the flight", (T.FLIGHT_CANCELLED,)),
    C.CANCEL_HOTEL: Role(Kind.COMPENSATION, "Cancel the hotel", (T.HOTEL_CANCELLED,)),
    C.CANCEL_CAR: Role(
        Kind.COMPENSATION, "Cancel the car, end the trip", (T.CAR_CANCELLED, T.ROLLED_BACK)
    ),
    C.PARK_TRIP_COMPENSATION: Role(
        Kind.COMPENSATION, "Park a failing compensation", (T.COMPENSATION_PARKED,)
    ),
    C.RETRY_TRIP_COMPENSATION: Role(
        Kind.COMPENSATION, "Retry the parked compensation", (T.COMPENSATION_RETRIED,)
    ),
    C.RESOLVE_TRIP_COMPENSATION: Role(Kind.COMPENSATION, "The parked compensation succeeded"),
    # Version 0.1's checkout (the ones it started finish under widget_store.legacy).
    C.REGISTER_PAYMENT: Role(Kind.STEP, "Register the payment at the provider"),
    "DBOS.setEvent": Role(Kind.INTERNAL, "Tell the shopper where to pay"),
    C.CHARGE_PAYMENT: Role(Kind.STEP, "Charge the payment"),
    C.CREATE_SHIPMENT: Role(Kind.STEP, "Book the shipment"),
    C.RECORD_SHIPMENT_FAILED: Role(Kind.INTERNAL, "Record the shipping failure"),
    C.MARK_PAID: Role(Kind.STEP, "Mark paid, start the dispatch", (), "dispatched"),
    C.RECORD_SHIPMENT_CANCELLED: Role(Kind.COMPENSATION, "Record the cancelled shipment"),
    C.CHECK_REFUND: Role(Kind.COMPENSATION, "Check whether a refund is due"),
    C.REQUEST_REFUND: Role(Kind.COMPENSATION, "Refund at the provider"),
    C.RECORD_REFUND: Role(Kind.COMPENSATION, "Record the refund"),
}
# Entries logged by no step of the saga: the webhook records the provider's verdict.
EVENT_LABELS = {
    E.CHARGED.value: "The provider's verdict: paid (webhook)",
    E.CHARGE_FAILED.value: "The provider's verdict: declined (webhook)",
}
STEP_OF_EVENT = {event.value: name for name, role in ROLES.items() for event in role.events}
# What a durable sleep is for, told by the operation before it.
SLEEP_LABELS = {
    C.PLACE_ORDER: "Payment deadline (the wait's timer)",  # the wait is still going on
    "DBOS.setEvent": "Payment deadline (the wait's timer)",
    "DBOS.recv": "Payment deadline (the wait's timer)",
    C.SHIP_ORDER: "Dispatch (a durable sleep)",
    C.MARK_PAID: "Dispatch (a durable sleep)",
}
IN_PROGRESS = {
    Stage.STARTING: "Starting",
    Stage.WAITING_FOR_PAYMENT: "Waiting for the shopper's payment",
    Stage.SETTLING: "Settling the payment",
    Stage.DISPATCHING: "Dispatching",
}


@dataclass
class Row:
    function_id: int
    name: str
    kind: Kind
    label: str
    start_ms: float | None
    end_ms: float | None
    attempts: int = 1
    output: str | None = None
    error: str | None = None
    failures: list[str] = field(default_factory=list)  # errors of earlier attempts
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "running" if self.end_ms is None else "ok"

    def as_json(self, now_ms: float) -> dict[str, Any]:
        end = self.end_ms if self.end_ms is not None else now_ms
        duration = None if self.start_ms is None else round(max(0.0, end - self.start_ms), 1)
        return {
            "function_id": self.function_id,
            "name": self.name,
            "label": self.label,
            "kind": self.kind.value,
            "status": self.status,
            "start_ms": self.start_ms,
            "duration_ms": duration,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
            "failures": self.failures,
            "events": self.events,
        }


async def saga_timeline(order: Mapping[str, Any], workflow_id: str) -> dict[str, Any]:
    """Read the order's workflow from DBOS and build its timeline."""
    status = await DBOS.get_workflow_status_async(workflow_id)
    steps = await DBOS.list_workflow_steps_async(workflow_id)
    return build_timeline(order, workflow_id, workflow_info(status), steps, datetime.now(UTC))


async def trip_timeline(trip: Mapping[str, Any], workflow_id: str) -> dict[str, Any]:
    """Read the trip's workflow from DBOS and build its timeline, as an order's is built."""
    status = await DBOS.get_workflow_status_async(workflow_id)
    steps = await DBOS.list_workflow_steps_async(workflow_id)
    return build_trip_timeline(trip, workflow_id, workflow_info(status), steps, datetime.now(UTC))


def build_trip_timeline(
    trip: Mapping[str, Any],
    workflow_id: str,
    workflow: Mapping[str, Any] | None,
    steps: Sequence[StepInfo],
    now: datetime,
) -> dict[str, Any]:
    """Join the trip workflow's steps with the trip's history, as `build_timeline` does."""
    now_ms = now.timestamp() * 1000
    starts = [float(ms) for s in steps if (ms := s["started_at_epoch_ms"]) is not None]
    clock = Clock(min(starts or [_ms(e["at"]) for e in trip["events"]] or [now_ms]))
    rows = _fold(steps, clock)
    _attach_events(rows, trip["events"], clock)
    running = workflow is not None and workflow["status"] in ACTIVE_WORKFLOW
    if running and all(row.end_ms is not None for row in rows):
        last = max((row.end_ms for row in rows if row.end_ms is not None), default=0.0)
        rows.append(Row(-1, "(in progress)", Kind.WAIT, "Booking", last, None))
    ends = [row.end_ms for row in rows if row.end_ms is not None]
    return {
        "trip_id": trip["trip_id"],
        "workflow_id": workflow_id,
        "trip_status": trip["status"],
        "finished": TripStatus(trip["status"]).is_terminal,
        "reason": trip.get("reason"),
        "workflow": dict(workflow) if workflow else None,
        "started_at": _from_ms(clock.zero_ms),
        "duration_ms": clock.at(now_ms) if running else max(ends, default=0.0),
        "compensations": sum(1 for row in rows if row.kind is Kind.COMPENSATION),
        "rows": [row.as_json(clock.at(now_ms)) for row in rows],
    }


def workflow_info(status: WorkflowStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "status": status.status,
        "name": status.name,
        "created_at": _from_ms(status.created_at),
        "completed_at": _from_ms(status.completed_at),
        "recovery_attempts": status.recovery_attempts,
        "executor_id": status.executor_id,
        "app_version": status.app_version,
        "output": _text(status.output),
        "error": _error_text(status.error),
    }


def build_timeline(
    order: Mapping[str, Any],
    workflow_id: str,
    workflow: Mapping[str, Any] | None,
    steps: Sequence[StepInfo],
    now: datetime,
) -> dict[str, Any]:
    """Join the workflow's steps with the order's events; times relative to the first step."""
    now_ms = now.timestamp() * 1000
    starts = [float(ms) for s in steps if (ms := s["started_at_epoch_ms"]) is not None]
    created = workflow["created_at"] if workflow else None
    # DBOS's created_at is whole seconds on SQLite, so the first step marks the start.
    fallback = created.timestamp() * 1000 if created else now_ms
    clock = Clock(min(starts or [_ms(e["at"]) for e in order["events"]] or [fallback]))

    rows = _fold(steps, clock)
    _attach_events(rows, order["events"], clock)
    stage = stage_of(order["status"], order.get("payment_verdict"))
    running = workflow is not None and workflow["status"] in ACTIVE_WORKFLOW
    if running and all(row.end_ms is not None for row in rows):
        last = max((row.end_ms for row in rows if row.end_ms is not None), default=0.0)
        label = IN_PROGRESS.get(stage, "Working")
        rows.append(Row(-1, "(in progress)", Kind.WAIT, label, last, None))
    ends = [row.end_ms for row in rows if row.end_ms is not None]
    end_ms = clock.at(now_ms) if running else max(ends, default=0.0)
    return {
        "order_id": order["order_id"],
        "workflow_id": workflow_id,
        "order_status": order["status"],
        "stage": stage.value,
        "cancel_reason": order.get("cancel_reason"),
        "workflow": dict(workflow) if workflow else None,
        "started_at": _from_ms(clock.zero_ms),
        "duration_ms": end_ms,
        "compensations": sum(1 for row in rows if row.kind is Kind.COMPENSATION),
        "rows": [row.as_json(clock.at(now_ms)) for row in rows],
    }


def _fold(steps: Sequence[StepInfo], clock: Clock) -> list[Row]:
    """One row per step; a step run again after failing (a retried compensation) is
    counted as another attempt of the same row, and the backoff sleep between is folded in.
    """
    rows: list[Row] = []
    named: dict[str, Row] = {}
    previous: StepInfo | None = None
    for step in steps:
        name = step["function_name"]
        role = ROLES.get(name, Role(Kind.INTERNAL, name))
        failed = named.get(previous["function_name"]) if previous and previous["error"] else None
        if name == SLEEP and failed is not None:
            failed.end_ms = clock.maybe(step["completed_at_epoch_ms"])
            continue  # the saga's backoff before the next attempt
        tries, failures = _tries(step)
        if name in named and not name.startswith("DBOS."):
            row = named[name]
            row.attempts += tries
            row.end_ms = clock.maybe(step["completed_at_epoch_ms"])
        else:
            label = role.label
            if name == SLEEP and previous is not None:
                label = SLEEP_LABELS.get(previous["function_name"], label)
            row = Row(
                step["function_id"],
                name,
                role.kind,
                label,
                clock.maybe(step["started_at_epoch_ms"]),
                clock.maybe(step["completed_at_epoch_ms"]),
                attempts=tries,
            )
            rows.append(row)
            if not name.startswith("DBOS."):
                named[name] = row
        row.failures.extend(failures)
        row.error = _error_text(step["error"])
        row.output = _output(step["output"], role, clock)
        previous = step
    return rows


def _tries(step: StepInfo) -> tuple[int, list[str]]:
    """How many calls one checkpointed step took, and the error of each failed one."""
    attempts = getattr(step["output"], "attempts", None)  # e.g. a Shipment
    if isinstance(attempts, int) and attempts > 0:
        return attempts, []
    errors = getattr(step["error"], "errors", None)  # DBOS's "maximum retries exceeded"
    if isinstance(errors, list) and errors:
        return len(errors), [_error_text(e) or "" for e in errors]
    error = _error_text(step["error"])
    return 1, [] if error is None else [error]


def _attach_events(rows: list[Row], events: Sequence[Mapping[str, Any]], clock: Clock) -> None:
    by_name = {row.name: row for row in rows}
    for event in events:
        at = clock.at(_ms(event["at"]))
        entry = {"type": event["type"], "detail": event["detail"], "at_ms": at}
        owner = by_name.get(STEP_OF_EVENT.get(event["type"], ""))
        if owner is not None:
            owner.events.append(entry)
            continue
        label = EVENT_LABELS.get(event["type"], event["type"])
        orphan = Row(-1, event["type"], Kind.EVENT, label, at, at, events=[entry])
        later = [i for i, row in enumerate(rows) if row.start_ms is not None and row.start_ms > at]
        rows.insert(later[0] if later else len(rows), orphan)


def _output(value: object, role: Role, clock: Clock) -> str | None:
    if role.output_is_time and isinstance(value, int | float):
        return f"{role.output_is_time} +{clock.at(value * 1000) / 1000:.3f} s"
    return _text(value)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    return _clip(value if isinstance(value, str) else repr(value))


def _error_text(error: object) -> str | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        message = str(error)
        return _clip(f"{type(error).__name__}: {message}" if message else type(error).__name__)
    return _clip(str(error))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _ms(at: datetime) -> float:
    return at.timestamp() * 1000


def _from_ms(epoch_ms: float | None) -> datetime | None:
    return None if epoch_ms is None else datetime.fromtimestamp(epoch_ms / 1000, UTC)
