"""Every durable name the store writes into DBOS's history, in one place.

A workflow's history is a list of (function ID, checkpoint name, output); DBOS replays a
recovered workflow by matching the names the code calls against that list. So these
strings are a stored format: renaming one, or changing the order in which a workflow
calls them, strands the workflows in flight at the time. Change a workflow's steps by
giving it a new `Workflow` name and keeping the old one registered until none of it is
left (`widget_store/legacy/`), never by editing the steps under an existing name.
"""

from __future__ import annotations

from enum import StrEnum


class Workflow(StrEnum):
    """Workflow names. Each name stands for one fixed step list."""

    CHECKOUT = "checkout.v2"
    RESOLVE_ORDER = "resolve_order.v2"
    WATCHDOG = "watchdog.v3"
    # `widget-store node`'s checkout (widget_store/node_checkout.py): a direct charge, no wait.
    NODE_CHECKOUT = "node_checkout.v1"
    BOOK_TRIP = "book_trip.v1"  # widget_store/trip.py
    # Registered by widget_store.legacy, for the workflows started by version 0.1.
    CHECKOUT_V1 = "checkout"
    RESOLVE_ORDER_V1 = "resolve_order"
    WATCHDOG_V2 = "watchdog.v2"  # widget_store/legacy/watchdog_v2.py
    WATCHDOG_V1 = "watchdog"


class Checkpoint(StrEnum):
    """Step names (and the crash points between steps that are no step of ours)."""

    # The checkout, forward.
    PLACE_ORDER = "place_order"
    EXPIRE_PAYMENT = "expire_payment"
    SHIP_ORDER = "ship_order"
    COMPLETE_DISPATCH = "complete_dispatch"
    # Its compensations, named for what they undo.
    CANCEL_ORDER = "cancel_order"
    RELEASE_INVENTORY = "release_inventory"
    REFUND_PAYMENT = "refund_payment"
    CANCEL_SHIPMENT = "cancel_shipment"
    # A compensation that keeps failing: parked, retried, resolved.
    PARK_COMPENSATION = "park_compensation"
    RETRY_COMPENSATION = "retry_compensation"
    RESOLVE_COMPENSATION = "resolve_compensation"
    # The trip, forward (each leg against its own service), and its compensations.
    BOOK_CAR = "book_car"
    BOOK_HOTEL = "book_hotel"
    BOOK_FLIGHT = "book_flight"
    CANCEL_CAR = "cancel_car"
    CANCEL_HOTEL = "cancel_hotel"
    CANCEL_FLIGHT = "cancel_flight"
    # A trip's compensation that keeps failing: parked, retried, resolved.
    PARK_TRIP_COMPENSATION = "park_trip_compensation"
    RETRY_TRIP_COMPENSATION = "retry_trip_compensation"
    RESOLVE_TRIP_COMPENSATION = "resolve_trip_compensation"
    # The watchdog and its resolving workflow.
    FIND_UNFINISHED_ORDERS = "find_unfinished_orders"  # watchdog.v2's one page
    FIND_STRANDED_ORDERS = "find_stranded_orders"
    READ_ORDER_STATUS = "read_order_status"
    RESUME_ORPHAN = "resume_orphan"
    # `widget-store node`'s checkout: its direct charge, and each batch of protocol messages
    # it sends (checkpointed, so a recovered saga sends only what it had not sent).
    CHARGE_DIRECTLY = "charge_directly"
    NODE_SAY = "node_say"
    # Crash points after DBOS's own operations (no checkpoint of ours carries them).
    AWAIT_PAYMENT = "await_payment"
    DISPATCH = "dispatch"
    # Version 0.1's checkout only (widget_store.legacy): replayed, never started anew.
    REGISTER_PAYMENT = "register_payment"
    PUBLISH_CHECKOUT = "publish_checkout"
    CHARGE_PAYMENT = "charge_payment"
    CREATE_SHIPMENT = "create_shipment"
    RECORD_SHIPMENT_FAILED = "record_shipment_failed"
    MARK_PAID = "mark_paid"
    RECORD_SHIPMENT_CANCELLED = "record_shipment_cancelled"
    CHECK_REFUND = "check_refund"
    REQUEST_REFUND = "request_refund"
    RECORD_REFUND = "record_refund"


# The checkpoints a checkout of the current version passes, in the order it may pass them:
# the crash-after-every-step tests walk this list.
CHECKOUT_CRASH_POINTS = (
    Checkpoint.PLACE_ORDER,
    Checkpoint.AWAIT_PAYMENT,
    Checkpoint.EXPIRE_PAYMENT,
    Checkpoint.SHIP_ORDER,
    Checkpoint.DISPATCH,
    Checkpoint.COMPLETE_DISPATCH,
    Checkpoint.CANCEL_SHIPMENT,
    Checkpoint.REFUND_PAYMENT,
    Checkpoint.RELEASE_INVENTORY,
    Checkpoint.CANCEL_ORDER,
)

# The same for a trip that books its car and hotel, and fails on the flight: every step
# and every compensation it may pass, in order.
TRIP_CRASH_POINTS = (
    Checkpoint.BOOK_CAR,
    Checkpoint.BOOK_HOTEL,
    Checkpoint.BOOK_FLIGHT,
    Checkpoint.CANCEL_FLIGHT,
    Checkpoint.CANCEL_HOTEL,
    Checkpoint.CANCEL_CAR,
)


class Topic(StrEnum):
    """DBOS message topics."""

    PAYMENT = "payment"  # the webhook's wake-up call to the waiting checkout
    COMPENSATION_RETRY = "compensation_retry"  # an operator's Retry of a parked undo


# Internal workflow IDs carry a character the checkout key pattern refuses, so no
# checkout key (which is a workflow ID too) can ever take one of them first.
INTERNAL_ID_PREFIX = "~"


NODE_SAGA_PREFIX = f"{INTERNAL_ID_PREFIX}node/"


def node_saga_id(saga_id: str) -> str:
    """The workflow (and order checkout key) of `widget-store node`'s saga `saga_id`."""
    return f"{NODE_SAGA_PREFIX}{saga_id}"


def is_node_saga(workflow_id: str) -> bool:
    return workflow_id.startswith(NODE_SAGA_PREFIX)


def resolve_order_id(order_id: int) -> str:
    """The watchdog's resolving workflow for an order."""
    return f"{INTERNAL_ID_PREFIX}resolve/{order_id}"
