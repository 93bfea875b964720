"""The failure matrix's tables: every forward step failed every way, every undo in every state.

Each case names what goes wrong and what the order must end as: its status, its reason,
and the compensations its event log must show, in order, with the words each one logs.
The outside world is faked by name, the way Temporal's samples fake an activity: a case
says what the simulated provider or carrier does when a named call arrives (fail first,
do the work and then time out, or find its record in a given state), and the real
simulated service does the rest. `test_failure_matrix.py` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from widget_store.checkpoints import Checkpoint

C = Checkpoint


class Mode(StrEnum):
    """The four ways a forward step can go wrong."""

    BUSINESS_FAILURE = "business failure"
    TRANSIENT = "transient error, then success"
    CRASH_AFTER = "crash right after the step"
    OUTCOME_UNKNOWN = "outcome unknown: the call happened, then timed out"


class Verdict(StrEnum):
    """What the shopper's provider says, and by which way it reaches the store."""

    PAID_ON_PAGE = "paid on the provider's page"  # the provider captures the money
    PAID_BY_WEBHOOK = "paid by a direct webhook"  # the provider's record stays open
    DECLINED_ON_PAGE = "declined on the provider's page"
    NONE = "no verdict"  # the payment deadline passes


# Calls to the outside world, by name.
CREATE_PAYMENT = "create_payment"
GIVE_BACK = "give_back"
CREATE_SHIPMENT = "create_shipment"
CANCEL_SHIPMENT = "cancel_shipment"


@dataclass
class OutsideCall:
    """How the outside answers one named call.

    `fail`: the next calls fail before doing anything (the service down). `lose`: the
    next calls do their work and then time out. `first`: SQL run on the store's database
    when the call first arrives, to put the outside into a state ({payment_id} and
    {shipment_key} are filled in).
    """

    fail: int = 0
    lose: int = 0
    first: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    expect_status: str
    expect_reason: str | None = None
    # (event type, detail) of every compensation logged, in order; {order_id},
    # {payment_id} and {total} are filled in.
    expect_undone: tuple[tuple[str, str], ...] = ()
    # Where the outside must end: the provider's and the carrier's record (None: none).
    expect_provider: str | None = None
    expect_carrier: str | None = None
    address: str = "1 Main Street, Springfield"
    out_of_stock: bool = False
    verdict: Verdict = Verdict.PAID_ON_PAGE
    payment_timeout_s: float = 30.0
    outside: dict[str, Callable[[], OutsideCall]] = field(default_factory=dict)
    # Faults armed inside the store (widget_store.faults), by step name.
    fail_in: tuple[str, ...] = ()
    disconnect_in: tuple[str, ...] = ()
    lose_answer_of: tuple[str, ...] = ()
    crash_after: str | None = None
    # The forward step and mode of the matrix this case fills, if it is one.
    step: str | None = None
    mode: Mode | None = None

    def __str__(self) -> str:
        return self.name


INVALID = "1 invalid street"
PAID_AT_PAGE = "captured"
TIMEOUT_S = 0.4  # a payment deadline that passes at once, for the cases that need one

UNDO_SHIPMENT_NEVER_BOOKED = ("CancelShipment", "never booked: nothing to cancel")
UNDO_SHIPMENT_BOOKED = ("CancelShipment", "cancelled shipment order-{order_id}")
UNDO_REFUND = ("RefundPayment", "refunded {total} cents (re_{payment_id})")
UNDO_VOID = ("RefundPayment", "nothing was captured: payment voided")
UNDO_RELEASE = ("ReleaseReservation", "1 x product 1 back on the shelf")


def cancelled(reason: str) -> tuple[str, str]:
    return ("CancelOrder", reason)


def after_shipping_failed(*first: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (*first, cancelled("shipping failed"))


def call(fail: int = 0, lose: int = 0, first: str | None = None) -> Callable[[], OutsideCall]:
    """A fresh OutsideCall per run: the counts are used up as the calls come."""
    return lambda: OutsideCall(fail, lose, first)


def _case(name: str, defaults: dict[str, object], overrides: dict[str, object]) -> Case:
    return Case(name=name, **{**defaults, **overrides})  # type: ignore[arg-type]


def dispatched(name: str, **overrides: object) -> Case:
    """Ends well: dispatched, paid on the provider's page, one live shipment."""
    defaults: dict[str, object] = {
        "expect_status": "DISPATCHED",
        "expect_provider": PAID_AT_PAGE,
        "expect_carrier": "live",
    }
    return _case(name, defaults, overrides)


def timed_out(name: str, **overrides: object) -> Case:
    """Nobody pays: at the deadline the open payment is voided and the stock released."""
    defaults: dict[str, object] = {
        "expect_status": "CANCELLED",
        "expect_reason": "payment timed out",
        "expect_undone": (UNDO_VOID, UNDO_RELEASE, cancelled("payment timed out")),
        "expect_provider": "voided",
        "verdict": Verdict.NONE,
        "payment_timeout_s": TIMEOUT_S,
    }
    return _case(name, defaults, overrides)


def failed_in_dispatch(name: str, **overrides: object) -> Case:
    """The last step fails for good: a paid order with a booked shipment is undone."""
    defaults: dict[str, object] = {
        "expect_status": "CANCELLED",
        "expect_reason": "internal error",
        "expect_undone": (
            UNDO_SHIPMENT_BOOKED,
            UNDO_REFUND,
            UNDO_RELEASE,
            cancelled("internal error"),
        ),
        "expect_provider": "refunded",
        "expect_carrier": "cancelled",
        "fail_in": (C.COMPLETE_DISPATCH,),
    }
    return _case(name, defaults, overrides)


def refused_address(name: str, **overrides: object) -> Case:
    """Paid, then the carrier refuses the address: refunded, released, cancelled."""
    defaults: dict[str, object] = {
        "expect_status": "CANCELLED",
        "expect_reason": "shipping failed",
        "expect_undone": after_shipping_failed(
            UNDO_SHIPMENT_NEVER_BOOKED, UNDO_REFUND, UNDO_RELEASE
        ),
        "expect_provider": "refunded",
        "address": INVALID,
    }
    return _case(name, defaults, overrides)


# --- every forward step x every way to fail ----------------------------------------------

FORWARD_STEPS = (C.PLACE_ORDER, C.EXPIRE_PAYMENT, C.SHIP_ORDER, C.COMPLETE_DISPATCH)


FORWARD_CASES = (
    # place_order
    Case(
        "place_order out of stock: nothing held, nothing charged, cancelled",
        "CANCELLED",
        "out of stock",
        (("ReleaseReservation", "nothing was held"), cancelled("out of stock")),
        out_of_stock=True,
        mode=Mode.BUSINESS_FAILURE,
        step=C.PLACE_ORDER,
    ),
    dispatched(
        "place_order losing its database connection is retried and dispatched",
        disconnect_in=(C.PLACE_ORDER,),
        mode=Mode.TRANSIENT,
        step=C.PLACE_ORDER,
    ),
    dispatched(
        "place_order crashing right after its checkpoint is recovered and dispatched",
        crash_after=C.PLACE_ORDER,
        mode=Mode.CRASH_AFTER,
        step=C.PLACE_ORDER,
    ),
    dispatched(
        "place_order whose provider opened the payment and timed out opens it once",
        outside={CREATE_PAYMENT: call(lose=1)},
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.PLACE_ORDER,
    ),
    dispatched(
        "place_order whose answer was lost after it committed places the order once",
        lose_answer_of=(C.PLACE_ORDER,),
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.PLACE_ORDER,
    ),
    # expire_payment: the deadline passing with no verdict is its business failure
    timed_out(
        "expire_payment at the deadline: the open payment is voided, stock released",
        mode=Mode.BUSINESS_FAILURE,
        step=C.EXPIRE_PAYMENT,
    ),
    timed_out(
        "expire_payment losing its database connection is retried, still timed out",
        disconnect_in=(C.EXPIRE_PAYMENT,),
        mode=Mode.TRANSIENT,
        step=C.EXPIRE_PAYMENT,
    ),
    timed_out(
        "expire_payment crashing right after its checkpoint is recovered, timed out",
        crash_after=C.EXPIRE_PAYMENT,
        mode=Mode.CRASH_AFTER,
        step=C.EXPIRE_PAYMENT,
    ),
    timed_out(
        "expire_payment whose answer was lost after it committed decides once",
        lose_answer_of=(C.EXPIRE_PAYMENT,),
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.EXPIRE_PAYMENT,
    ),
    # ship_order
    refused_address(
        "ship_order refused by the carrier: refunded, released, cancelled",
        mode=Mode.BUSINESS_FAILURE,
        step=C.SHIP_ORDER,
    ),
    dispatched(
        "ship_order losing its database connection is retried and books once",
        disconnect_in=(C.SHIP_ORDER,),
        mode=Mode.TRANSIENT,
        step=C.SHIP_ORDER,
    ),
    dispatched(
        "ship_order crashing right after its checkpoint is recovered and dispatched",
        crash_after=C.SHIP_ORDER,
        mode=Mode.CRASH_AFTER,
        step=C.SHIP_ORDER,
    ),
    dispatched(
        "ship_order whose carrier booked and timed out books once and dispatches",
        outside={CREATE_SHIPMENT: call(lose=1)},
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.SHIP_ORDER,
    ),
    dispatched(
        "ship_order whose answer was lost after it committed is marked paid once",
        lose_answer_of=(C.SHIP_ORDER,),
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.SHIP_ORDER,
    ),
    # complete_dispatch: it has no business failure of its own; a permanent one stands in
    failed_in_dispatch(
        "complete_dispatch failing for good: shipment cancelled, refunded, released",
        mode=Mode.BUSINESS_FAILURE,
        step=C.COMPLETE_DISPATCH,
    ),
    dispatched(
        "complete_dispatch losing its database connection is retried and dispatched",
        disconnect_in=(C.COMPLETE_DISPATCH,),
        mode=Mode.TRANSIENT,
        step=C.COMPLETE_DISPATCH,
    ),
    dispatched(
        "complete_dispatch crashing right after its checkpoint stays dispatched",
        crash_after=C.COMPLETE_DISPATCH,
        mode=Mode.CRASH_AFTER,
        step=C.COMPLETE_DISPATCH,
    ),
    dispatched(
        "complete_dispatch whose answer was lost after it committed dispatches once",
        lose_answer_of=(C.COMPLETE_DISPATCH,),
        mode=Mode.OUTCOME_UNKNOWN,
        step=C.COMPLETE_DISPATCH,
    ),
    # The crash points between steps (after DBOS's own recv and sleep), and the outside's
    # own transient failures, which the steps retry.
    dispatched(
        "a crash right after the payment message arrives is recovered and dispatched",
        crash_after=C.AWAIT_PAYMENT,
    ),
    dispatched(
        "a crash right after the dispatch sleep is recovered and dispatched",
        crash_after=C.DISPATCH,
    ),
    dispatched(
        "a provider briefly down while the payment opens is asked again",
        outside={CREATE_PAYMENT: call(fail=1)},
    ),
    dispatched(
        "a carrier briefly down is asked again and books once",
        outside={CREATE_SHIPMENT: call(fail=2)},
    ),
    dispatched(
        "a paid-by-webhook order is dispatched with the provider's record left open",
        verdict=Verdict.PAID_BY_WEBHOOK,
        expect_provider="open",
    ),
    # Issue 8, item 3: an unknown outcome, then a permanent failure later in the saga.
    refused_address(
        "a carrier that books and times out on every attempt has the shipment cancelled",
        address="1 Main Street, Springfield",
        outside={CREATE_SHIPMENT: call(lose=5)},
        expect_undone=after_shipping_failed(UNDO_SHIPMENT_BOOKED, UNDO_REFUND, UNDO_RELEASE),
        expect_carrier="cancelled",
    ),
    failed_in_dispatch(
        "a carrier that books and times out, then a permanent failure, is undone in full",
        outside={CREATE_SHIPMENT: call(lose=1)},
    ),
)

# Crashing right after each compensation: it is not run twice, and the rest still run.
CRASHES_IN_COMPENSATION = tuple(
    refused_address(f"a crash right after {undo} is recovered and undone once", crash_after=undo)
    for undo in (C.CANCEL_SHIPMENT, C.REFUND_PAYMENT, C.RELEASE_INVENTORY, C.CANCEL_ORDER)
)


# --- every compensation x every state of the outside ---------------------------------------


class Undo(StrEnum):
    REFUND_PAYMENT = "RefundPayment"
    CANCEL_SHIPMENT = "CancelShipment"
    RELEASE_RESERVATION = "ReleaseReservation"


PAYMENT_STATES = (
    "captured",
    "open, never captured",
    "already refunded",
    "already voided",
    "unknown to the provider",
    "provider failing, then recovering",
)
SHIPMENT_STATES = ("booked", "never booked", "already cancelled", "unknown to the carrier")
STOCK_STATES = ("held", "nothing held", "already released")

SET_PROVIDER = (
    "UPDATE provider_payments SET status = '{status}' WHERE payment_id = '{{payment_id}}'"
)
RELEASE_BEHIND_ITS_BACK = (
    "UPDATE products SET inventory = inventory + 1 WHERE product_id = 1;"
    " UPDATE orders SET reservation = 'released' WHERE payment_id = '{payment_id}'"
)


@dataclass(frozen=True)
class UndoCase:
    undo: Undo
    state: str
    case: Case


UNDO_CASES = (
    UndoCase(
        Undo.REFUND_PAYMENT,
        "captured",
        refused_address("RefundPayment refunds a captured payment"),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "open, never captured",
        refused_address(
            "RefundPayment voids a payment the provider never captured (paid by webhook)",
            verdict=Verdict.PAID_BY_WEBHOOK,
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED, UNDO_VOID, UNDO_RELEASE
            ),
            expect_provider="voided",
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "already refunded",
        refused_address(
            "RefundPayment finds the payment already refunded and refunds nothing more",
            outside={
                GIVE_BACK: call(
                    first="UPDATE provider_payments SET status = 'refunded', refunds = 1"
                    " WHERE payment_id = '{payment_id}'"
                )
            },
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED,
                ("RefundPayment", "already refunded (re_{payment_id})"),
                UNDO_RELEASE,
            ),
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "already voided",
        refused_address(
            "RefundPayment finds the payment already voided and is done",
            verdict=Verdict.PAID_BY_WEBHOOK,
            outside={GIVE_BACK: call(first=SET_PROVIDER.format(status="voided"))},
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED,
                ("RefundPayment", "nothing was captured: already voided"),
                UNDO_RELEASE,
            ),
            expect_provider="voided",
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "unknown to the provider",
        refused_address(
            "RefundPayment for a payment the provider never heard of moves nothing",
            verdict=Verdict.PAID_BY_WEBHOOK,
            outside={
                GIVE_BACK: call(
                    first="DELETE FROM provider_payments WHERE payment_id = '{payment_id}'"
                )
            },
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED,
                ("RefundPayment", "the provider has no such payment: nothing moved"),
                UNDO_RELEASE,
            ),
            expect_provider=None,
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "provider failing, then recovering",
        refused_address(
            "RefundPayment retries a provider that fails, then refunds once",
            outside={GIVE_BACK: call(fail=1)},
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "declined",
        Case(
            "RefundPayment after a declined payment has nothing to give back",
            "CANCELLED",
            "payment declined",
            (
                ("RefundPayment", "nothing was captured: the payment was declined"),
                UNDO_RELEASE,
                cancelled("payment declined"),
            ),
            expect_provider="declined",
            verdict=Verdict.DECLINED_ON_PAGE,
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "expired",
        timed_out(
            "RefundPayment after the provider expired the payment has nothing to give back",
            outside={GIVE_BACK: call(first=SET_PROVIDER.format(status="expired"))},
            expect_undone=(
                ("RefundPayment", "nothing was captured: the payment expired"),
                UNDO_RELEASE,
                cancelled("payment timed out"),
            ),
            expect_provider="expired",
        ),
    ),
    UndoCase(
        Undo.REFUND_PAYMENT,
        "refunded, then the answer lost",
        refused_address(
            "RefundPayment whose refund happened but timed out finds it refunded, once",
            outside={GIVE_BACK: call(lose=1)},
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED,
                ("RefundPayment", "already refunded (re_{payment_id})"),
                UNDO_RELEASE,
            ),
        ),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "booked",
        failed_in_dispatch("CancelShipment cancels a booked shipment"),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "never booked",
        refused_address("CancelShipment after a refused address has nothing to cancel"),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "already cancelled",
        failed_in_dispatch(
            "CancelShipment finds the shipment already cancelled and is done",
            outside={
                CANCEL_SHIPMENT: call(
                    first="UPDATE carrier_shipments SET status = 'cancelled'"
                    " WHERE shipment_key = '{shipment_key}'"
                )
            },
            expect_undone=(
                ("CancelShipment", "already cancelled"),
                UNDO_REFUND,
                UNDO_RELEASE,
                cancelled("internal error"),
            ),
        ),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "unknown to the carrier",
        Case(
            "CancelShipment for a shipment the carrier never heard of cancels nothing",
            "CANCELLED",
            "internal error",
            (
                UNDO_SHIPMENT_NEVER_BOOKED,
                UNDO_REFUND,
                UNDO_RELEASE,
                cancelled("internal error"),
            ),
            expect_provider="refunded",
            expect_carrier=None,
            fail_in=(C.COMPLETE_DISPATCH,),
            outside={
                CANCEL_SHIPMENT: call(
                    first="DELETE FROM carrier_shipments WHERE shipment_key = '{shipment_key}'"
                )
            },
        ),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "carrier failing, then recovering",
        failed_in_dispatch(
            "CancelShipment retries a carrier that fails, then cancels",
            outside={CANCEL_SHIPMENT: call(fail=1)},
        ),
    ),
    UndoCase(
        Undo.CANCEL_SHIPMENT,
        "cancelled, then the answer lost",
        failed_in_dispatch(
            "CancelShipment whose cancellation happened but timed out finds it cancelled",
            outside={CANCEL_SHIPMENT: call(lose=1)},
            expect_undone=(
                ("CancelShipment", "already cancelled"),
                UNDO_REFUND,
                UNDO_RELEASE,
                cancelled("internal error"),
            ),
        ),
    ),
    UndoCase(
        Undo.RELEASE_RESERVATION,
        "held",
        refused_address("ReleaseReservation puts held stock back on the shelf"),
    ),
    UndoCase(
        Undo.RELEASE_RESERVATION,
        "nothing held",
        FORWARD_CASES[0],  # out of stock: nothing was held
    ),
    UndoCase(
        Undo.RELEASE_RESERVATION,
        "already released",
        refused_address(
            "ReleaseReservation finds the stock already back and puts back nothing more",
            # Released behind the saga's back just before its turn (the refund runs first).
            outside={GIVE_BACK: call(first=RELEASE_BEHIND_ITS_BACK)},
            expect_undone=after_shipping_failed(
                UNDO_SHIPMENT_NEVER_BOOKED,
                UNDO_REFUND,
                ("ReleaseReservation", "already back on the shelf"),
            ),
        ),
    ),
    UndoCase(
        Undo.RELEASE_RESERVATION,
        "released, then the answer lost",
        refused_address(
            "ReleaseReservation whose answer was lost after it committed releases once",
            lose_answer_of=(C.RELEASE_INVENTORY,),
        ),
    ),
)
