"""`widget-store node`'s protocol: JSON lines, their envelope, and every message's shape.

Each line is one JSON object `{"src", "dest", "body"}`; the body's `type` says what it is.
The node reads `init` and `checkout`, and answers as whoever the message was sent to
(its `dest`). Everything here is pure (no I/O, no DBOS), so the shapes are unit-tested
on their own; `node.py` reads and writes the lines, `node_checkout.py` runs the saga.

A line the node cannot use gets an `error` reply, `{"code", "text"}` with Maelstrom's
numeric codes, and the node goes on with the next line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, TypeGuard

from widget_store.domain import MAX_ADDRESS_LENGTH, MAX_LINES, MAX_QUANTITY

MAX_LINE_BYTES = 64 * 1024
MAX_NAME_LENGTH = 100  # a saga ID, a user ID, a SKU, a node's name


class ErrorCode(IntEnum):
    """Maelstrom's error codes, the ones the node answers with."""

    NOT_SUPPORTED = 10  # a message type the node does not know
    MALFORMED_REQUEST = 12  # not JSON, not an envelope, a field missing or wrong
    CRASH = 13  # the node failed on this message; the line was not acted on
    KEY_DOES_NOT_EXIST = 20  # an unknown SKU
    PRECONDITION_FAILED = 22  # a saga ID already used for a different checkout


class ProtocolError(Exception):
    """A line the node cannot act on; `reply_to` says who to tell, as far as is known."""

    def __init__(
        self,
        code: ErrorCode,
        text: str,
        *,
        reply_to: Envelope | None = None,
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.reply_to = reply_to


class MessageType(StrEnum):
    INIT = "init"
    CHECKOUT = "checkout"


@dataclass(frozen=True)
class Envelope:
    src: str | None
    dest: str | None
    body: Mapping[str, Any]

    @property
    def msg_id(self) -> int | None:
        value = self.body.get("msg_id")
        return value if _is_int(value) and value >= 0 else None

    def reply(self, body: Mapping[str, Any]) -> Envelope:
        """An answer to this message: from its addressee, to its sender, in reply to it."""
        answer = dict(body)
        if self.msg_id is not None:
            answer["in_reply_to"] = self.msg_id
        return Envelope(src=self.dest, dest=self.src, body=answer)


@dataclass(frozen=True)
class SkuLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class CheckoutMessage:
    """A parsed `checkout` (the node's saga's input, so a stored format: keep its fields)."""

    client: str  # the envelope's src: where every message of the saga goes
    node: str  # the envelope's dest: who the saga's messages come from
    msg_id: int | None
    saga_id: str
    user_id: str
    items: tuple[SkuLine, ...]
    shipping_address: str

    def same_request(self, other: CheckoutMessage) -> bool:
        """Whether `other` asks for the same checkout (a retry), whoever sent it."""
        return (self.user_id, self.items, self.shipping_address) == (
            other.user_id,
            other.items,
            other.shipping_address,
        )


# --- reading ----------------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_line(raw: bytes) -> Envelope:
    """One line as an envelope, or ProtocolError(MALFORMED_REQUEST) saying what is wrong."""
    if len(raw) > MAX_LINE_BYTES:
        raise ProtocolError(
            ErrorCode.MALFORMED_REQUEST, f"a line is {MAX_LINE_BYTES} bytes at most"
        )
    try:
        decoded = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "not valid JSON"
        raise ProtocolError(ErrorCode.MALFORMED_REQUEST, f"the line is {reason}") from None
    if not isinstance(decoded, dict):
        raise ProtocolError(ErrorCode.MALFORMED_REQUEST, "a message is a JSON object")
    src, dest, body = decoded.get("src"), decoded.get("dest"), decoded.get("body")
    known = Envelope(
        src=src if _is_name(src) else None,
        dest=dest if _is_name(dest) else None,
        body=body if isinstance(body, dict) else {},
    )
    if known.src is None or known.dest is None or not isinstance(body, dict):
        raise ProtocolError(
            ErrorCode.MALFORMED_REQUEST,
            "a message needs src and dest (names) and a body (an object)",
            reply_to=known,
        )
    if "msg_id" in body and known.msg_id is None:
        raise ProtocolError(
            ErrorCode.MALFORMED_REQUEST, "msg_id is a whole number, 0 or more", reply_to=known
        )
    if not isinstance(body.get("type"), str):
        raise ProtocolError(ErrorCode.MALFORMED_REQUEST, "the body needs a type", reply_to=known)
    return known


def message_type(envelope: Envelope) -> MessageType:
    """The body's type, or ProtocolError(NOT_SUPPORTED)."""
    kind = envelope.body["type"]
    try:
        return MessageType(kind)
    except ValueError:
        shown = kind if len(kind) <= MAX_NAME_LENGTH and kind.isprintable() else "this type"
        raise ProtocolError(
            ErrorCode.NOT_SUPPORTED,
            f"{shown!r} is not a message this node knows",
            reply_to=envelope,
        ) from None


def _is_text(value: object, longest: int) -> TypeGuard[str]:
    if not isinstance(value, str) or not value.strip() or len(value) > longest:
        return False
    try:
        value.encode("utf-8")  # a lone surrogate cannot be stored
    except UnicodeEncodeError:
        return False
    return value.isprintable()


def _is_name(value: object) -> TypeGuard[str]:
    return _is_text(value, MAX_NAME_LENGTH)


def parse_checkout(envelope: Envelope) -> CheckoutMessage:
    """A `checkout` body's fields, checked; ProtocolError(MALFORMED_REQUEST) names the first
    that is wrong."""
    body = envelope.body

    def malformed(text: str) -> ProtocolError:
        return ProtocolError(ErrorCode.MALFORMED_REQUEST, text, reply_to=envelope)

    for name in ("saga_id", "user_id"):
        if not _is_name(body.get(name)):
            raise malformed(f"{name} is a name of 1 to {MAX_NAME_LENGTH} printable characters")
    address = body.get("shipping_address")
    if not _is_text(address, MAX_ADDRESS_LENGTH):
        raise malformed(f"shipping_address is text of 1 to {MAX_ADDRESS_LENGTH} characters")
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_LINES:
        raise malformed(f"items is a list of 1 to {MAX_LINES} lines")
    lines: list[SkuLine] = []
    for item in items:
        if not isinstance(item, dict) or not _is_name(item.get("sku")):
            raise malformed("each item needs a sku (a string)")
        quantity = item.get("quantity")
        if not _is_int(quantity) or not 1 <= quantity <= MAX_QUANTITY:
            raise malformed(f"each item's quantity is a whole number from 1 to {MAX_QUANTITY}")
        if any(line.sku == item["sku"] for line in lines):
            raise malformed(f"sku {item['sku']!r} is on more than one line")
        lines.append(SkuLine(item["sku"], quantity))
    assert envelope.src is not None and envelope.dest is not None  # parse_line checked them
    return CheckoutMessage(
        client=envelope.src,
        node=envelope.dest,
        msg_id=envelope.msg_id,
        saga_id=body["saga_id"],
        user_id=body["user_id"],
        items=tuple(lines),
        shipping_address=address,
    )


# --- writing ----------------------------------------------------------------------------


def encode(envelope: Envelope) -> str:
    """One line of output (without its newline): keys in envelope order, ASCII only."""
    return json.dumps({"src": envelope.src, "dest": envelope.dest, "body": dict(envelope.body)})


def init_ok() -> dict[str, Any]:
    return {"type": "init_ok"}


def error(code: ErrorCode, text: str) -> dict[str, Any]:
    return {"type": "error", "code": int(code), "text": text}


# The saga's steps, numbered as the protocol numbers them.
RESERVE, CHARGE, SHIP = 1, 2, 3


def _items(items: Sequence[SkuLine]) -> list[dict[str, Any]]:
    return [{"sku": line.sku, "quantity": line.quantity} for line in items]


def reservations(order_id: int, items: Sequence[SkuLine]) -> list[dict[str, str]]:
    """One reservation per line: the order's hold on that SKU."""
    return [
        {"sku": line.sku, "reservation_id": f"r{order_id}-{n}"}
        for n, line in enumerate(items, start=1)
    ]


def reserve_inventory(saga_id: str, items: Sequence[SkuLine]) -> dict[str, Any]:
    return {"type": "ReserveInventory", "saga_id": saga_id, "step": RESERVE, "items": _items(items)}


def reserve_inventory_ok(saga_id: str, held: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "type": "ReserveInventory_ok",
        "saga_id": saga_id,
        "step": RESERVE,
        "reservations": held,
    }


def reserve_inventory_failed(saga_id: str, short: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "ReserveInventory_failed",
        "saga_id": saga_id,
        "step": RESERVE,
        "error": "insufficient_inventory",
        "items": short,
    }


def charge_payment(saga_id: str, user_id: str, amount_cents: int) -> dict[str, Any]:
    return {
        "type": "ChargePayment",
        "saga_id": saga_id,
        "step": CHARGE,
        "user_id": user_id,
        "amount": amount_cents / 100,
    }


def charge_payment_ok(saga_id: str, payment_id: str, transaction_id: str) -> dict[str, Any]:
    return {
        "type": "ChargePayment_ok",
        "saga_id": saga_id,
        "step": CHARGE,
        "payment_id": payment_id,
        "transaction_id": transaction_id,
    }


def charge_payment_failed(saga_id: str, error: str, decline_code: str) -> dict[str, Any]:
    return {
        "type": "ChargePayment_failed",
        "saga_id": saga_id,
        "step": CHARGE,
        "error": error,
        "decline_code": decline_code,
    }


def create_shipment(saga_id: str, items: Sequence[SkuLine], address: str) -> dict[str, Any]:
    return {
        "type": "CreateShipment",
        "saga_id": saga_id,
        "step": SHIP,
        "items": _items(items),
        "address": address,
    }


def create_shipment_ok(saga_id: str, shipment_id: str, tracking_number: str) -> dict[str, Any]:
    return {
        "type": "CreateShipment_ok",
        "saga_id": saga_id,
        "step": SHIP,
        "shipment_id": shipment_id,
        "tracking_number": tracking_number,
    }


STEP_NAMES = {RESERVE: "ReserveInventory", CHARGE: "ChargePayment", SHIP: "CreateShipment"}


def step_failed(saga_id: str, step: int, error: str, detail: str) -> dict[str, Any]:
    """A step that failed other than the ways its own message says (`detail` is words)."""
    return {
        "type": f"{STEP_NAMES[step]}_failed",
        "saga_id": saga_id,
        "step": step,
        "error": error,
        "detail": detail,
    }


def release_reservation(saga_id: str, held: list[dict[str, str]]) -> dict[str, Any]:
    return _undo("ReleaseReservation", saga_id, RESERVE, reservations=held)


def refund_payment(saga_id: str, payment_id: str) -> dict[str, Any]:
    return _undo("RefundPayment", saga_id, CHARGE, payment_id=payment_id)


def cancel_shipment(saga_id: str, shipment_id: str) -> dict[str, Any]:
    return _undo("CancelShipment", saga_id, SHIP, shipment_id=shipment_id)


def _undo(kind: str, saga_id: str, step: int, **what: Any) -> dict[str, Any]:
    return {"type": kind, "saga_id": saga_id, "step": step, "compensating": True, **what}


def undone(undo: Mapping[str, Any]) -> dict[str, Any]:
    """The `_ok` of a compensation message."""
    return {"type": f"{undo['type']}_ok", "saga_id": undo["saga_id"], "step": undo["step"]}


def checkout_complete(saga_id: str, order_id: str) -> dict[str, Any]:
    return {
        "type": "checkout_complete",
        "saga_id": saga_id,
        "status": "COMPLETED",
        "order_id": order_id,
    }


def checkout_failed(saga_id: str, reason: str) -> dict[str, Any]:
    return {"type": "checkout_failed", "saga_id": saga_id, "status": "ABORTED", "reason": reason}
