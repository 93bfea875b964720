"""A checkout recovered in a new process after kill -9 carries on in its original trace.

The real server exports its spans to stdout (OTEL_TRACES_EXPORTER=console), so the
test reads them back from the server's log.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PostgresDatabase
from tests.helpers import Shopper, cart, eventually, new_key
from tests.server import running_server
from widget_store.config import Database, Settings

pytestmark = pytest.mark.postgres

# ConsoleSpanExporter prints each span as an indented JSON object.
SPAN = re.compile(r"^\{\n.*?^\}$", re.DOTALL | re.MULTILINE)


def exported_spans(log: Path) -> list[dict[str, Any]]:
    spans = []
    for match in SPAN.finditer(log.read_text(errors="replace")):
        try:
            spans.append(json.loads(match.group(0)))
        except json.JSONDecodeError:
            continue  # two processes' output interleaved; the rest still reads
    return [span for span in spans if "context" in span]


def test_a_checkout_recovered_after_kill_9_stays_in_its_trace(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    postgres.reset()
    log = tmp_path / "server.log"
    env = {
        "WIDGET_STORE_DATABASE_URL": postgres.url,
        "WIDGET_STORE_DISPATCH_S": "0.2",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, before the kill
    }
    key = new_key()
    with running_server(env, log) as server:
        shopper = Shopper(server.http, Settings(database=Database.parse(postgres.url)))
        placed = shopper.checkout(cart((1, 1)), key=key).json()
        time.sleep(0.5)  # the request's span is exported
        server.kill_worker()  # the checkout waits for payment in the dead worker
        assert shopper.choose(placed["payment_url"], "pay").status_code == 303
        shopper.wait_for(placed["order_id"], "DISPATCHED", timeout=60)
        eventually(
            lambda: [s for s in exported_spans(log) if s["name"] == "checkout.v2"],
            timeout=10,
            every=0.1,
            what="the recovered workflow's span",
        )

    spans = exported_spans(log)
    request = next(s for s in spans if s["name"] == "POST /checkout/{idempotency_key}")
    trace_id = request["context"]["trace_id"]
    checkout = [s for s in spans if s["attributes"].get("operationUUID") == key]
    recovered = next(s for s in checkout if s["name"] == "checkout.v2")
    # The workflow span of the process that recovered it hangs under the original request.
    assert recovered["parent_id"] == request["context"]["span_id"]
    after_the_kill = {s["name"] for s in checkout} - {"place_order"}
    assert {"recv", "ship_order", "checkout.v2"} <= after_the_kill
    assert {s["context"]["trace_id"] for s in checkout} == {trace_id}
