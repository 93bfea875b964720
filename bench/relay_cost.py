"""What the outbox relay costs: the same purchases on a store relaying to NATS JetStream and
on one that only fills its outbox.

Both stores write every event to the outbox (that is part of each state change's own
transaction, relay or not); they differ only in `WIDGET_STORE_NATS_URL`, so the difference
is the relay: its polls of the outbox, its publishes and their acknowledgements, the rows
marked sent. The relaying store publishes to a private `nats-server -js` of its own. After
each of its turns the benchmark checks that the relay kept up: every event of the turn
reaches the broker within a few seconds of the last purchase.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bench.observability import LOG_LEVEL, OFF, Comparison, compare_settings
from bench.store import BenchStore
from tests.broker import NatsServer, nats_server_binary

DRAIN_TIMEOUT_S = 30.0


def unsent_events(store: BenchStore) -> int:
    engine = sa.create_engine(store.database.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            unsent: int = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            ).scalar_one()
        return unsent
    finally:
        engine.dispose()


@contextmanager
def drained(store: BenchStore) -> Iterator[None]:
    """After the turn, the relay must have sent everything the turn wrote."""
    yield
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (left := unsent_events(store)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"{left} events still unsent {DRAIN_TIMEOUT_S:g} s after the turn"


def compare(
    levels: list[int], seconds: float, rounds: int, workers: int, *, settle_s: float | None = None
) -> list[Comparison]:
    """`settle_s` (default: the observability benchmark's) lets the stores' start-up pass
    before the first turn; the smoke run skips it."""
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("the relay benchmark needs nats-server (Debian's nats-server package)")
    base = {**OFF, **LOG_LEVEL}  # metrics and JSON logs off on both: only the relay differs
    with tempfile.TemporaryDirectory(prefix="widget-store-bench-nats-") as folder:
        broker = NatsServer(binary, Path(folder))
        broker.start()
        try:
            return compare_settings(
                base,
                {**base, "WIDGET_STORE_NATS_URL": broker.url},
                levels,
                seconds,
                rounds,
                workers,
                while_on=drained,
                **({} if settle_s is None else {"settle_s": settle_s}),
            )
        finally:
            broker.stop()
