"""Pure rules: totals, prices frozen at order time, shortages, request fingerprints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from widget_store.domain import (
    CheckoutRequest,
    InvalidRequest,
    LineItem,
    OrderStatus,
    PricedLine,
    ShortItem,
    UnknownProduct,
    dispatch_remaining,
    order_total,
    price_lines,
    restocked,
    shortages,
)


def test_order_total_sums_quantity_times_frozen_unit_price() -> None:
    lines = [PricedLine(1, 2, 1500), PricedLine(2, 1, 2500)]
    assert order_total(lines) == 5500


def test_price_lines_freezes_todays_prices() -> None:
    lines = price_lines([LineItem(1, 3)], {1: 999, 2: 5})
    assert lines == [PricedLine(1, 3, 999)]


def test_price_lines_names_every_unknown_product() -> None:
    with pytest.raises(UnknownProduct) as refused:
        price_lines([LineItem(1, 1), LineItem(7, 1), LineItem(9, 1)], {1: 100})
    assert refused.value.extra["product_ids"] == [7, 9]


def test_shortages_lists_lines_the_shelves_cannot_fill() -> None:
    short = shortages([LineItem(1, 2), LineItem(2, 5), LineItem(3, 1)], {1: 2, 2: 4})
    assert short == [ShortItem(2, 5, 4), ShortItem(3, 1, 0)]


def test_a_request_lists_its_lines_in_product_order() -> None:
    request = CheckoutRequest.of([LineItem(3, 1), LineItem(1, 2)], "addr")
    assert [line.product_id for line in request.items] == [1, 3]


def test_the_fingerprint_ignores_line_order_but_not_content() -> None:
    a = CheckoutRequest.of([LineItem(3, 1), LineItem(1, 2)], "addr")
    b = CheckoutRequest.of([LineItem(1, 2), LineItem(3, 1)], "addr")
    c = CheckoutRequest.of([LineItem(1, 2), LineItem(3, 2)], "addr")
    d = CheckoutRequest.of([LineItem(1, 2), LineItem(3, 1)], "other addr")
    assert a.fingerprint() == b.fingerprint()
    assert len({a.fingerprint(), c.fingerprint(), d.fingerprint()}) == 3


def test_a_request_refuses_duplicate_lines_and_empty_carts() -> None:
    with pytest.raises(InvalidRequest, match="product 2 appears on more than one line"):
        CheckoutRequest.of([LineItem(2, 1), LineItem(2, 3)], "addr")
    with pytest.raises(InvalidRequest, match="at least one item"):
        CheckoutRequest.of([], "addr")


def test_dispatch_progress_counts_down_to_the_durable_deadline() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert dispatch_remaining(OrderStatus.PAID, now + timedelta(seconds=7.25), now) == 7.2
    assert dispatch_remaining(OrderStatus.PAID, now - timedelta(seconds=1), now) == 0.0
    assert dispatch_remaining(OrderStatus.DISPATCHED, None, now) == 0.0
    assert dispatch_remaining(OrderStatus.PENDING, None, now) is None
    assert dispatch_remaining(OrderStatus.CANCELLED, now, now) is None


@pytest.mark.parametrize(
    ("on_hand", "held", "available"),
    [(100, 0, 100), (10, 3, 7), (3, 3, 0), (2, 5, 0), (0, 0, 0)],
)
def test_a_restock_puts_on_the_shelf_what_live_orders_do_not_hold(
    on_hand: int, held: int, available: int
) -> None:
    shelf = restocked(7, on_hand, held)
    assert (shelf.product_id, shelf.on_hand, shelf.held, shelf.available) == (
        7,
        on_hand,
        held,
        available,
    )


def test_once_the_held_units_come_back_the_shelf_holds_what_the_restock_said() -> None:
    shelf = restocked(1, 10, 3)
    assert shelf.available + shelf.held == 10
