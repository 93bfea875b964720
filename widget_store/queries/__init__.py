"""Every SQL statement the store runs, as small async functions taking a connection.

By topic: `catalog` (products and stock), `orders` (the saga's writes: each one a
conditional UPDATE or a keyed insert, so that running it twice changes nothing),
`reads` (orders read back), `dead_letters` (parked compensations), `outbox` (events
waiting for the broker) and `ops` (the operations view). Callers use them through this
package: `queries.hold_stock(db, id, lines)`.
"""

from widget_store.queries._base import TERMINAL, Db, utcnow
from widget_store.queries.catalog import (
    add_missing_products,
    first_product,
    get_product,
    held_by_live_orders,
    list_products,
    prices_of,
    product_ids_by_sku,
    set_stock_on_hand,
)
from widget_store.queries.dead_letters import (
    dead_letter,
    list_dead_letters,
    park_dead_letter,
    set_dead_letter_status,
)
from widget_store.queries.orders import (
    advance_and_log,
    append_event,
    append_events,
    cancel_order,
    claim_first_verdict,
    claim_verdict,
    close_verdict,
    hold_stock,
    insert_order,
    order_lines,
    payment_of,
    release_stock,
    remember_webhook_event,
    set_payment_state,
    set_payment_url,
    set_status,
    short_items_of,
)
from widget_store.queries.outbox import (
    add_aggregate_event,
    add_event,
    mark_sent,
    oldest_unsent,
    outbox_lag,
)
from widget_store.queries.reads import (
    event_count,
    list_orders,
    order_by_id,
    order_by_key,
    order_by_payment,
    order_details,
    order_state,
    unfinished_orders,
)

__all__ = [
    "TERMINAL",
    "Db",
    "add_aggregate_event",
    "add_event",
    "add_missing_products",
    "advance_and_log",
    "append_event",
    "append_events",
    "cancel_order",
    "claim_first_verdict",
    "claim_verdict",
    "close_verdict",
    "dead_letter",
    "event_count",
    "first_product",
    "get_product",
    "held_by_live_orders",
    "hold_stock",
    "insert_order",
    "list_dead_letters",
    "list_orders",
    "list_products",
    "mark_sent",
    "oldest_unsent",
    "order_by_id",
    "order_by_key",
    "order_by_payment",
    "order_details",
    "order_lines",
    "order_state",
    "outbox_lag",
    "park_dead_letter",
    "payment_of",
    "prices_of",
    "product_ids_by_sku",
    "release_stock",
    "remember_webhook_event",
    "set_dead_letter_status",
    "set_payment_state",
    "set_payment_url",
    "set_status",
    "set_stock_on_hand",
    "short_items_of",
    "unfinished_orders",
    "utcnow",
]
