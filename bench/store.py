"""The store under benchmark, started the way the README starts it: `widget-store serve`."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa

from bench.baseline import Build
from bench.metrics import PostgresCounters, process_tree
from tests.chaos.cluster import PrivateCluster
from tests.server import ServerProcess
from widget_store.config import DEMO_WEBHOOK_SECRET, Database


@dataclass
class StoreOptions:
    backend: str = "postgres"  # or "sqlite", the embedded default
    workers: int = 1
    dispatch_s: float = 0.0
    payment_timeout_s: float = 900.0
    env: dict[str, str] = field(default_factory=dict)  # more settings, over the defaults
    build: Build | None = None  # an earlier commit's store (bench/baseline.py); None: this one


class BenchStore:
    """A served store and a window onto its database; `with` starts and stops both."""

    def __init__(self, options: StoreOptions) -> None:
        self.options = options
        self.folder = Path(tempfile.mkdtemp(prefix="widget-store-bench-"))
        self.cluster: PrivateCluster | None = None
        if options.backend == "postgres":
            # PostgreSQL's default durability (fsync on), plus pg_stat_statements.
            self.cluster = PrivateCluster(durable=True, statements=True)
            self.cluster.create()
            url = self.cluster.url
        else:
            url = f"sqlite:///{self.folder / 'store.sqlite'}"
        self.database = Database.parse(url)
        self.secret = DEMO_WEBHOOK_SECRET
        self.server = ServerProcess(
            {
                "WIDGET_STORE_DATABASE_URL": url,
                "WIDGET_STORE_DISPATCH_S": str(options.dispatch_s),
                "WIDGET_STORE_PAYMENT_TIMEOUT_S": str(options.payment_timeout_s),
                "WIDGET_STORE_WORKERS": str(options.workers),
                "WIDGET_STORE_LOG_LEVEL": "WARNING",
                **options.env,
            },
            self.folder / "server.log",
            source=options.build.source if options.build else None,
            python=options.build.python if options.build else None,
        )
        self.counters = PostgresCounters(self.database.sync_url) if self.cluster else None
        self.started_at = time.monotonic()

    def __enter__(self) -> BenchStore:
        self.started_at = time.monotonic()
        self.server.start()
        self.server.worker_pid(timeout=120)
        self.server.http.post("/restock", json={"inventory": 1_000_000}).raise_for_status()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.stop()
        if self.counters:
            self.counters.close()
        if self.cluster:
            self.cluster.destroy()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def webhook_names_payment(self) -> bool:
        """Whether the webhook's signed body names its payment and verdict (version 0.1's
        held only the event and the amount)."""
        return self.options.build is None or self.options.build.webhook_names_payment

    @property
    def watches_status(self) -> bool:
        """Whether the order long poll takes `after_status` (version 0.1's did not)."""
        return self.options.build is None or self.options.build.watches_status

    def database_pids(self) -> list[int]:
        """The private PostgreSQL server's processes (none for SQLite)."""
        if self.cluster is None:
            return []
        pid_file = self.cluster.data / "postmaster.pid"
        return process_tree(int(pid_file.read_text().split()[0])) if pid_file.exists() else []

    def pids(self) -> list[int]:
        assert self.server.pid is not None
        return process_tree(self.server.pid)

    def price_cents(self) -> int:
        price: int = self.server.http.get("/products/1").json()["price_cents"]
        return price

    def settle(self, timeout_s: float = 120) -> None:
        """Wait until no order is between checkout and its end (paid ones dispatch on)."""
        engine = sa.create_engine(self.database.sync_url, poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    busy = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM orders WHERE status = 'PAID' OR "
                            "(status = 'PENDING' AND payment_verdict != 'awaiting')"
                        )
                    ).scalar()
                if not busy:
                    return
                time.sleep(0.2)
        finally:
            engine.dispose()
