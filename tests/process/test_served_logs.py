"""`widget-store serve` with WIDGET_STORE_LOG_FORMAT=json writes nothing but JSON lines,
whichever logger wrote them: gunicorn's, uvicorn's, DBOS's, Alembic's or the store's."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import eventually
from tests.server import running_server


def test_the_served_store_logs_only_json_lines_from_every_logger(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    env = {
        "WIDGET_STORE_DATABASE_URL": database_url,
        "WIDGET_STORE_LOG_FORMAT": "json",
        "WIDGET_STORE_LOG_LEVEL": "INFO",
    }
    with running_server(env, log) as server:
        assert server.http.post("/payment_webhook/pay_x/paid", content=b"{}").status_code == 401
        eventually(
            lambda: "refused webhook" in log.read_text(), timeout=10, what="the refusal logged"
        )
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in parsed)
    loggers = {entry["logger"] for entry in parsed}
    assert {"widget_store.cli", "gunicorn.error", "uvicorn.error", "dbos"} <= loggers, loggers
    assert any(e["logger"] == "widget_store.api" and e["level"] == "WARNING" for e in parsed)
