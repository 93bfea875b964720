"""The node's protocol on its own: reading lines, refusing bad ones, the shapes it writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from widget_store import node_protocol as protocol
from widget_store.node_protocol import (
    CheckoutMessage,
    Envelope,
    ErrorCode,
    MessageType,
    ProtocolError,
    SkuLine,
)


def line(body: Any, src: Any = "c1", dest: Any = "n1") -> bytes:
    return json.dumps({"src": src, "dest": dest, "body": body}).encode()


def checkout_body(**changes: Any) -> dict[str, Any]:
    body = {
        "type": "checkout",
        "msg_id": 2,
        "saga_id": "checkout42",
        "user_id": "u42",
        "items": [{"sku": "abc123", "quantity": 2}, {"sku": "xyz789", "quantity": 1}],
        "shipping_address": "123 Main St",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def refusal(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_checkout(protocol.parse_line(raw))
    return refused.value


def test_the_seeds_init_is_answered_with_the_seeds_line() -> None:
    init = protocol.parse_line(
        b'{"src":"c0","dest":"checkout_orchestrator","body":{"type":"init","msg_id":1}}'
    )
    assert protocol.message_type(init) is MessageType.INIT
    reply = init.reply(protocol.init_ok())
    numbered = Envelope(reply.src, reply.dest, {**reply.body, "msg_id": 0})
    assert protocol.encode(numbered) == (
        '{"src": "checkout_orchestrator", "dest": "c0", '
        '"body": {"type": "init_ok", "in_reply_to": 1, "msg_id": 0}}'
    )


def test_a_checkout_is_read_into_its_fields() -> None:
    message = protocol.parse_checkout(protocol.parse_line(line(checkout_body())))
    assert message == CheckoutMessage(
        client="c1",
        node="n1",
        msg_id=2,
        saga_id="checkout42",
        user_id="u42",
        items=(SkuLine("abc123", 2), SkuLine("xyz789", 1)),
        shipping_address="123 Main St",
    )


def test_a_checkout_without_a_msg_id_is_read_and_answered_without_in_reply_to() -> None:
    envelope = protocol.parse_line(line(checkout_body(msg_id=None)))
    assert protocol.parse_checkout(envelope).msg_id is None
    assert "in_reply_to" not in envelope.reply(protocol.init_ok()).body


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"src": "c1", "dest": "n1", "body": {"type": "init"}',  # cut short
        b"\xff\xfe",
        b'{"src": "c1", "dest": "n1", "body": {"type": "init", "n": NaN}}',
        b'{"src": "c1", "dest": "n1", "body": {"type": "init", "n": 1e400}}',
        b"[1, 2, 3]",
        b"[" * 100_000,
        b" " * (protocol.MAX_LINE_BYTES + 1),
    ],
)
def test_a_line_that_is_not_a_json_object_is_malformed_and_answers_nobody(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_line(raw)
    assert refused.value.code is ErrorCode.MALFORMED_REQUEST
    assert refused.value.text
    assert refused.value.reply_to is None


@pytest.mark.parametrize(
    ("raw", "src", "dest"),
    [
        (line({"type": "init", "msg_id": 1}, src=None), None, "n1"),
        (line({"type": "init", "msg_id": 1}, dest=7), "c1", None),
        (line({"type": "init", "msg_id": 1}, src="c\n1"), None, "n1"),
        (line({"type": 3, "msg_id": 1}), "c1", "n1"),
        (line("init"), "c1", "n1"),
    ],
)
def test_a_bad_envelope_is_malformed_and_answered_as_far_as_it_says_who(
    raw: bytes, src: str | None, dest: str | None
) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_line(raw)
    assert refused.value.code is ErrorCode.MALFORMED_REQUEST
    reply_to = refused.value.reply_to
    assert reply_to is not None and (reply_to.src, reply_to.dest) == (src, dest)


@pytest.mark.parametrize("msg_id", [-1, 1.5, "2", True, None])
def test_a_msg_id_is_a_whole_number(msg_id: Any) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_line(line({"type": "init", "msg_id": msg_id}))
    assert refused.value.code is ErrorCode.MALFORMED_REQUEST
    assert refused.value.reply_to is not None
    assert "in_reply_to" not in refused.value.reply_to.reply({}).body


def test_an_unknown_type_is_not_supported_and_answered() -> None:
    envelope = protocol.parse_line(line({"type": "echo", "msg_id": 9}))
    with pytest.raises(ProtocolError) as refused:
        protocol.message_type(envelope)
    assert refused.value.code is ErrorCode.NOT_SUPPORTED
    assert "echo" in refused.value.text
    assert refused.value.reply_to is envelope


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"saga_id": None}, "saga_id"),
        ({"saga_id": ""}, "saga_id"),
        ({"saga_id": "x" * 101}, "saga_id"),
        ({"saga_id": 42}, "saga_id"),
        ({"user_id": ["u42"]}, "user_id"),
        ({"shipping_address": None}, "shipping_address"),
        ({"shipping_address": "\ud800 lone surrogate"}, "shipping_address"),
        ({"items": []}, "items"),
        ({"items": {"sku": "abc123"}}, "items"),
        ({"items": [{"sku": "abc123"}]}, "quantity"),
        ({"items": [{"sku": "abc123", "quantity": 0}]}, "quantity"),
        ({"items": [{"sku": "abc123", "quantity": 101}]}, "quantity"),
        ({"items": [{"sku": "abc123", "quantity": 2.0}]}, "quantity"),
        ({"items": [{"sku": "abc123", "quantity": True}]}, "quantity"),
        ({"items": [{"sku": 123, "quantity": 1}]}, "sku"),
        ({"items": [{"sku": "abc123", "quantity": 1}] * 2}, "more than one line"),
        ({"items": ["abc123"]}, "sku"),
    ],
)
def test_a_checkout_with_a_bad_field_is_malformed_and_says_which(
    changes: dict[str, Any], named: str
) -> None:
    refused = refusal(line(checkout_body(**changes)))
    assert refused.code is ErrorCode.MALFORMED_REQUEST
    assert named in refused.text
    assert refused.reply_to is not None and refused.reply_to.msg_id == 2


def test_a_retry_is_the_same_request_whoever_sends_it() -> None:
    first = protocol.parse_checkout(protocol.parse_line(line(checkout_body())))
    retry = protocol.parse_checkout(protocol.parse_line(line(checkout_body(msg_id=7), src="c9")))
    other = protocol.parse_checkout(
        protocol.parse_line(line(checkout_body(items=[{"sku": "abc123", "quantity": 3}])))
    )
    assert first.same_request(retry)
    assert not first.same_request(other)


def test_an_error_reply_carries_a_code_and_a_text() -> None:
    envelope = protocol.parse_line(line({"type": "checkout", "msg_id": 4}))
    reply = envelope.reply(protocol.error(ErrorCode.KEY_DOES_NOT_EXIST, "unknown sku: q"))
    assert (reply.src, reply.dest) == ("n1", "c1")
    assert reply.body == {"type": "error", "code": 20, "text": "unknown sku: q", "in_reply_to": 4}


def test_the_step_messages_have_the_seeds_shapes() -> None:
    items = (SkuLine("abc123", 2), SkuLine("xyz789", 1))
    held = protocol.reservations(7, items)
    assert [r["sku"] for r in held] == ["abc123", "xyz789"]
    assert len({r["reservation_id"] for r in held}) == 2
    assert protocol.charge_payment("checkout42", "u42", 24999) == {
        "type": "ChargePayment", "saga_id": "checkout42", "step": 2, "user_id": "u42",
        "amount": 249.99,
    }  # fmt: skip
    assert protocol.create_shipment("checkout42", items, "123 Main St")["items"] == [
        {"sku": "abc123", "quantity": 2},
        {"sku": "xyz789", "quantity": 1},
    ]
    release = protocol.release_reservation("checkout43", held)
    assert release == {
        "type": "ReleaseReservation", "saga_id": "checkout43", "step": 1, "compensating": True,
        "reservations": held,
    }  # fmt: skip
    assert protocol.undone(release) == {
        "type": "ReleaseReservation_ok", "saga_id": "checkout43", "step": 1
    }  # fmt: skip
    assert protocol.undone(protocol.refund_payment("s", "pay_1"))["type"] == "RefundPayment_ok"
    assert protocol.cancel_shipment("s", "order-7")["step"] == 3
    assert protocol.checkout_failed("checkout43", "Payment declined: DECLINED") == {
        "type": "checkout_failed", "saga_id": "checkout43", "status": "ABORTED",
        "reason": "Payment declined: DECLINED",
    }  # fmt: skip
    assert protocol.checkout_complete("checkout42", "o7")["status"] == "COMPLETED"
