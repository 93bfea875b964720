"""GET /metrics, in process, on both backends: names, route templates, webhook results,
new checkouts counted once, and health gauges that agree with /ops/summary."""

from __future__ import annotations

import time
from dataclasses import replace

from prometheus_client import REGISTRY

from tests.helpers import Store, cart, new_key
from tests.metrics_scrape import names, scrape, value
from widget_store import metrics
from widget_store.config import Settings

FIXED_NAMES = {
    "widget_store_checkouts_started_total",
    "widget_store_checkouts_ended_total",
    "widget_store_webhook_deliveries_total",
    "widget_store_dead_letters_open",
    "widget_store_checkouts_waiting_for_payment",
    "widget_store_oldest_waiting_checkout_age_seconds",
    "widget_store_checkouts_past_payment_deadline",
    "widget_store_orphaned_sagas",
    "widget_store_outbox_unsent_events",
    "widget_store_outbox_oldest_unsent_age_seconds",
    "widget_store_http_requests_total",
    "widget_store_http_request_duration_seconds_bucket",
    "widget_store_payment_wait_seconds_bucket",
}
REQUESTS = "widget_store_http_requests_total"
WEBHOOKS = "widget_store_webhook_deliveries_total"


def test_the_metrics_page_has_every_fixed_name_in_prometheus_text(store: Store) -> None:
    store.http.get("/healthz")
    assert names(scrape(store.http)) >= FIXED_NAMES


def test_requests_are_counted_by_route_template_never_by_raw_path(store: Store) -> None:
    before = scrape(store.http)
    store.http.get("/order/1")
    store.http.get("/order/2")
    store.http.get("/no/such/page")
    store.http.get("/static/site.css")
    store.http.post(f"/checkout/{new_key()}", content=b"x" * (1024 * 1024 + 1))
    after = scrape(store.http)

    def delta(route: str, status: str, method: str = "GET") -> float:
        labels = {"method": method, "route": route, "status": status}
        return value(after, REQUESTS, **labels) - value(before, REQUESTS, **labels)

    assert delta("/order/{order_id}", "404") == 2
    assert delta("unmatched", "404") == 1
    assert delta("/static/{path}", "200") == 1
    assert delta("/checkout/{idempotency_key}", "413", method="POST") == 1
    routes = {dict(labels)["route"] for name, labels in after if name == REQUESTS}
    assert not [route for route in routes if any(ch.isdigit() for ch in route)], routes
    duration = ("widget_store_http_request_duration_seconds_count", "/order/{order_id}")
    assert value(after, duration[0], method="GET", route=duration[1]) >= 2


def test_a_new_checkout_counts_once_and_a_retry_of_its_key_does_not(store: Store) -> None:
    started = "widget_store_checkouts_started_total"
    before = value(scrape(store.http), started)
    key = new_key()
    first = store.checkout(cart((1, 1)), key=key)
    retry = store.checkout(cart((1, 1)), key=key)
    assert first.status_code == retry.status_code == 200
    assert first.json()["order_id"] == retry.json()["order_id"]
    assert value(scrape(store.http), started) - before == 1


def test_webhook_deliveries_are_counted_by_what_the_store_made_of_them(
    store: Store, settings: Settings
) -> None:
    paid = store.checkout(cart((1, 1))).json()
    total = store.order(paid["order_id"])["total_cents"]
    waiting = store.checkout(cart((2, 1))).json()
    before = scrape(store.http)

    assert store.webhook(paid["payment_id"], "paid", total, event_id="evt-1").status_code == 200
    assert store.webhook(paid["payment_id"], "paid", total, event_id="evt-1").status_code == 200
    assert store.webhook(paid["payment_id"], "failed", total, event_id="evt-2").status_code == 409
    assert store.webhook(paid["payment_id"], "paid", total, secret="forged").status_code == 401
    assert store.webhook(waiting["payment_id"], "paid", total + 1).status_code == 400
    assert store.webhook("pay_nobody", "paid", total).status_code == 404
    assert store.webhook(waiting["payment_id"], "paid", 0, body=b"{nope").status_code == 422
    after = scrape(store.http)

    counted = {
        result.value: value(after, WEBHOOKS, result=result.value)
        - value(before, WEBHOOKS, result=result.value)
        for result in metrics.WebhookResult
    }
    assert counted == {
        "accepted": 1,
        "duplicate": 2,  # the same event again, and a verdict on a decided payment
        "late": 0,
        "bad_signature": 1,
        "wrong_amount": 1,
        "unknown_payment": 1,
        "bad_request": 1,
    }


def test_a_webhook_after_the_deadline_counts_as_late(settings: Settings) -> None:
    with Store.running(replace(settings, payment_timeout_s=0.3)) as store:
        placed = store.checkout(cart((1, 1))).json()
        total = store.order(placed["order_id"])["total_cents"]
        assert store.wait_for(placed["order_id"])["cancel_reason"] == "payment timed out"
        before = value(scrape(store.http), WEBHOOKS, result="late")
        assert store.webhook(placed["payment_id"], "paid", total).status_code == 409
        assert value(scrape(store.http), WEBHOOKS, result="late") - before == 1


def workflow_table(store: Store) -> str:
    return "workflow_status" if store.settings.database.is_sqlite else "dbos.workflow_status"


def test_health_gauges_read_the_database_and_agree_with_the_ops_summary(store: Store) -> None:
    key = new_key()
    placed = store.checkout(cart((1, 1)), key=key).json()
    store.checkout(cart((2, 1)))
    # One of the two is past its deadline (its saga's own timer has a minute to go);
    # a compensation of it is parked; a deploy left its workflow on an old version.
    store.execute(
        "UPDATE orders SET payment_deadline = :past WHERE order_id = :id",
        past=store.scalar(
            "SELECT created_at FROM orders WHERE order_id = :id", id=placed["order_id"]
        ),
        id=placed["order_id"],
    )
    store.execute(
        "INSERT INTO dead_letters (order_id, workflow_id, compensation, last_error, attempts,"
        " status, parked_at, updated_at) VALUES (:id, :key, 'RefundPayment', 'down', 8,"
        " 'parked', :now, :now)",
        id=placed["order_id"],
        key=key,
        now=store.scalar(
            "SELECT created_at FROM orders WHERE order_id = :id", id=placed["order_id"]
        ),
    )
    store.execute(
        f"UPDATE {workflow_table(store)} SET application_version = 'a-retired-version'"
        " WHERE workflow_uuid = :key",
        key=key,
    )
    time.sleep(0.05)  # the oldest waiting checkout has some age

    samples = scrape(store.http)
    summary = store.http.get("/ops/summary").json()

    gauges = {
        "waiting": value(samples, "widget_store_checkouts_waiting_for_payment"),
        "past_deadline": value(samples, "widget_store_checkouts_past_payment_deadline"),
        "dead_letters": value(samples, "widget_store_dead_letters_open"),
        "orphaned": value(samples, "widget_store_orphaned_sagas"),
    }
    assert gauges == {"waiting": 2, "past_deadline": 1, "dead_letters": 1, "orphaned": 1}
    assert value(samples, "widget_store_oldest_waiting_checkout_age_seconds") > 0
    assert summary["waiting_for_payment"] == gauges["waiting"]
    assert summary["oldest_waiting"]["order_id"] == placed["order_id"]
    assert summary["stuck"] == {
        "past_payment_deadline": 1,
        "dead_letters_open": 1,
        "orphaned_sagas": 1,
    }


def test_a_workflow_on_an_executor_this_deployment_lacks_is_orphaned(store: Store) -> None:
    key = new_key()
    store.checkout(cart((1, 1)), key=key)
    assert value(scrape(store.http), "widget_store_orphaned_sagas") == 0
    store.execute(
        f"UPDATE {workflow_table(store)} SET executor_id = 'widget-store-7'"
        " WHERE workflow_uuid = :key",
        key=key,
    )
    assert value(scrape(store.http), "widget_store_orphaned_sagas") == 1


def test_with_a_metrics_token_a_scrape_must_bring_it(settings: Settings) -> None:
    token = "metrics-token-0123456789"
    with Store.running(replace(settings, metrics_token=token)) as store:
        assert store.http.get("/metrics").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert store.http.get("/metrics", headers=wrong).status_code == 401
        assert "widget_store_orphaned_sagas" in names(
            scrape(store.http, {"Authorization": f"Bearer {token}"})
        )


def test_with_metrics_off_there_is_no_page_and_nothing_is_counted(settings: Settings) -> None:
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    with Store.running(replace(settings, metrics=False)) as store:
        before = REGISTRY.get_sample_value(REQUESTS, labels) or 0
        store.http.get("/healthz")
        assert store.http.get("/metrics").status_code == 404
        assert (REGISTRY.get_sample_value(REQUESTS, labels) or 0) == before
    metrics.set_enabled(True)


def test_what_the_saga_did_is_counted_ends_compensations_steps_and_the_wait(
    store: Store,
) -> None:
    before = scrape(store.http)
    paid = store.checkout(cart((1, 1))).json()
    store.choose(paid["payment_url"], "pay")
    store.wait_for(paid["order_id"], "DISPATCHED")
    declined = store.checkout(cart((1, 1))).json()
    store.choose(declined["payment_url"], "decline")
    store.wait_for(declined["order_id"], "CANCELLED")
    after = scrape(store.http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ended = "widget_store_checkouts_ended_total"
    assert delta(ended, outcome="dispatched", reason="") == 1
    assert delta(ended, outcome="cancelled", reason="payment declined") == 1
    undo = "widget_store_compensations_total"
    assert delta(undo, compensation="RefundPayment", result="nothing_to_undo") == 1
    assert delta(undo, compensation="ReleaseReservation", result="done") == 1
    assert delta(undo, compensation="CancelOrder", result="done") == 1
    steps = "widget_store_step_duration_seconds_count"
    assert delta(steps, checkpoint="place_order") == 2
    assert delta(steps, checkpoint="ship_order") == 1
    assert delta("widget_store_payment_wait_seconds_count") == 2


def test_the_outbox_lag_is_a_gauge_and_agrees_with_the_ops_summary(store: Store) -> None:
    store.checkout(cart((1, 1)))  # no broker here: its events wait in the outbox
    samples = scrape(store.http)
    summary = store.http.get("/ops/summary").json()["outbox"]
    assert value(samples, "widget_store_outbox_unsent_events") == summary["unsent"] > 0
    assert value(samples, "widget_store_outbox_oldest_unsent_age_seconds") >= 0
