"""The `widget-store` command: `serve`, `migrate`, `webhook`, `sign-webhook`, `consume`, `node`.

`serve` runs the app under gunicorn's master process with uvicorn workers. Gunicorn is
the supervisor: when a worker dies (the crash button, `kill -9`), the master forks a new
one at once, and DBOS in the new worker recovers every workflow the dead one left
pending. Each worker slot keeps a stable DBOS executor ID across restarts, which is
what lets the replacement recover its predecessor's workflows.

The workers share their metrics through files in one folder (prometheus-client's
multiprocess mode): `serve` makes it, empty, before the first fork, and tells each
worker's death to prometheus-client (gunicorn's `child_exit` hook).

`consume` is the example subscriber to the store's event stream (widget_store/consumer.py).

`node` is the checkout orchestrator spoken as JSON lines on standard input and output
(widget_store/node.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from sqlalchemy.ext.asyncio import create_async_engine

from widget_store import consumer, logs
from widget_store.config import ConfigError, LogFormat, Settings
from widget_store.migrate import migrate
from widget_store.provider_cli import DEFAULT_URL, send_webhook, signature_header
from widget_store.serving import StoreWorker

log = logging.getLogger("widget_store.cli")
EXECUTOR_ID_VARIABLE = "WIDGET_STORE_EXECUTOR_ID"
# prometheus-client's own variable: it picks multiprocess mode when it is set on import.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _assign_slot(server: Any, worker: Any) -> None:
    """gunicorn pre_fork hook (master): give the new worker the lowest free slot."""
    taken = {getattr(w, "slot", None) for w in server.WORKERS.values()}
    worker.slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def _name_executor(server: Any, worker: Any) -> None:
    """gunicorn post_fork hook (worker): the slot names the DBOS executor."""
    os.environ[EXECUTOR_ID_VARIABLE] = f"widget-store-{worker.slot}"


def _forget_dead_worker(server: Any, worker: Any) -> None:
    """gunicorn child_exit hook (master): a dead worker's live gauges are dropped.

    Its counters stay in the folder and keep counting in the sums, as counters must.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class JsonGunicornLogger(GunicornLogger):  # type: ignore[misc]
    """Gunicorn's error log (and uvicorn's, which the worker points at it) as JSON lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(logs.JsonFormatter())


def prepare_metrics_dir(configured: Path | None) -> tuple[Path, bool]:
    """The workers' shared metrics folder, empty; and whether `serve` made it (and so
    removes it at exit).

    Must run before prometheus-client is imported: it chooses multiprocess mode on
    import, once, from the environment.
    """
    if "prometheus_client.values" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its folder was set up")
    made = configured is None
    folder = (
        Path(tempfile.mkdtemp(prefix="widget-store-metrics-")) if configured is None else configured
    )
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # a previous run's counts would be summed in
        stale.unlink()
    os.environ[METRICS_DIR_VARIABLE] = str(folder)
    return folder, made


class StoreServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()
        # Imported here, in the master (after the metrics folder is set up), so that
        # forked workers start without paying for the imports.
        from widget_store.app import create_app

        self._create_app = create_app
        # What the master has loaded (most of it imports) is never garbage: kept out of
        # the collector's reach, the workers' full collections skip it and its pages stay
        # shared between them instead of being copied by the collector's writes.
        gc.freeze()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Runs in each worker after post_fork, so the settings carry its executor ID.
        app = self._create_app(Settings.from_env())
        gc.collect()
        gc.freeze()  # the app lives as long as the worker: no full collection need scan it
        return app


def worker_count(requested: str | None, settings: Settings) -> int:
    """How many app processes: `auto` is one per core on PostgreSQL; SQLite runs one."""
    if requested is None:
        workers = settings.workers
    elif requested == "auto":
        workers = 1 if settings.database.is_sqlite else (os.cpu_count() or 1)
    else:
        workers = int(requested)
    if settings.database.is_sqlite and workers > 1:
        log.warning("the embedded SQLite database supports one worker; using 1")
        return 1
    return max(1, workers)


def _workers_argument(raw: str) -> str:
    if raw == "auto" or (raw.isdigit() and 1 <= int(raw) <= 64):
        return raw
    raise argparse.ArgumentTypeError("a number of processes from 1 to 64, or auto")


def serve(host: str, port: int, requested_workers: str | None) -> None:
    settings = Settings.from_env()
    settings.check_safe_to_start()
    workers = worker_count(requested_workers, settings)
    # Workers read their settings from the environment: tell them how many slots exist,
    # so the watchdog can tell a live executor from one that is gone.
    os.environ["WIDGET_STORE_WORKERS"] = str(workers)
    metrics_dir, made_metrics_dir = (
        prepare_metrics_dir(settings.metrics_dir) if settings.metrics else (None, False)
    )
    _announce(settings, f"Widget Store: migrating {settings.database.describe()}")
    migrate(settings)
    _announce(settings, f"Widget Store: serving on http://{host}:{port} ({workers} worker(s))")
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        # uvicorn's worker with a request-read deadline and a connection limit.
        "worker_class": StoreWorker,
        "pre_fork": _assign_slot,
        "post_fork": _name_executor,
        "graceful_timeout": 10,
        "timeout": 60,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "errorlog": "-",
        # One control socket per user by default: two stores on one machine would clash.
        "control_socket_disable": True,
    }
    if metrics_dir is not None:
        options["child_exit"] = _forget_dead_worker
    if settings.log_format is LogFormat.JSON:
        options["logger_class"] = JsonGunicornLogger
    try:
        StoreServer(options).run()
    finally:
        if made_metrics_dir and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _announce(settings: Settings, message: str) -> None:
    """A line for whoever started the store: plain in text mode, a log record in JSON."""
    if settings.log_format is LogFormat.JSON:
        log.info(message)
    else:
        print(message, flush=True)


def consume(durable: str) -> None:
    """Keep the example order projection up to date from NATS until interrupted."""
    settings = Settings.from_env()
    nats_url = settings.nats_url
    if not nats_url:
        raise ConfigError("widget-store consume needs WIDGET_STORE_NATS_URL (nats://host:4222)")
    database = settings.consumer_database or settings.database
    if database.is_sqlite and database.url.database:
        os.makedirs(os.path.dirname(os.path.abspath(database.url.database)), exist_ok=True)
    print(
        f"Widget Store: consuming order events from {nats_url} as {durable!r} "
        f"into {database.describe()} (table order_projection)",
        flush=True,
    )

    async def run() -> consumer.Tally:
        engine = create_async_engine(database.async_url)
        try:
            return await consumer.consume(engine, nats_url, durable=durable)
        finally:
            await engine.dispose()

    tally = asyncio.run(run())
    print(
        f"Widget Store: stopped; {tally.applied} applied, {tally.duplicates} duplicates "
        f"skipped, {tally.early} handed back early",
        flush=True,
    )


def node(settings: Settings, crash_after: list[str], fail_in: list[str]) -> None:
    """Run the checkout orchestrator until its input ends and its sagas are done."""
    if (crash_after or fail_in) and not settings.fault_injection:
        raise ConfigError("--crash-after and --fail-in need WIDGET_STORE_FAULT_INJECTION=1")
    settings.check_safe_to_start()
    from widget_store.node import run_node  # DBOS and the saga, only for this command

    run_node(settings, crash_after=crash_after, fail_in=fail_in)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="widget-store", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="migrate, then serve the store (supervised)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--workers",
        type=_workers_argument,
        help="app processes, or auto: one per core (PostgreSQL only; "
        "default WIDGET_STORE_WORKERS or 1)",
    )
    commands.add_parser("migrate", help="bring the configured database's schema to head")
    webhook_cmd = commands.add_parser(
        "webhook", help="act as the payment provider: post a signed verdict to the store"
    )
    webhook_cmd.add_argument("payment_id", help="the payment_id the checkout answered with")
    webhook_cmd.add_argument("status", choices=["paid", "failed"])
    webhook_cmd.add_argument(
        "--url", default=DEFAULT_URL, help=f"the store (default {DEFAULT_URL})"
    )
    webhook_cmd.add_argument(
        "--amount", type=int, help="in cents (default: what the provider was asked to charge)"
    )
    webhook_cmd.add_argument("--event-id", help="the provider's event ID (default: a new one)")
    sign_cmd = commands.add_parser(
        "sign-webhook", help="print the Widget-Signature header for a webhook body (for curl)"
    )
    sign_cmd.add_argument("body", help="the exact JSON body you will post")
    consume_cmd = commands.add_parser(
        "consume", help="the example subscriber: a per-order projection of the event stream"
    )
    consume_cmd.add_argument(
        "--durable",
        default=consumer.DURABLE,
        help="the JetStream durable consumer's name (its position in the stream)",
    )
    node_cmd = commands.add_parser(
        "node", help="the checkout orchestrator: JSON-line messages on stdin, replies on stdout"
    )
    for flag, meaning in (
        ("--crash-after", "kill the node (SIGKILL) right after this saga step"),
        ("--fail-in", "make this saga step fail once"),
    ):
        node_cmd.add_argument(
            flag,
            action="append",
            default=[],
            metavar="STEP",
            help=f"tests only, with WIDGET_STORE_FAULT_INJECTION=1: {meaning}",
        )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        if args.command == "serve":
            serve(args.host, args.port, args.workers)
        elif args.command == "consume":
            consume(args.durable)
        elif args.command == "node":
            node(settings, args.crash_after, args.fail_in)
        elif args.command == "migrate":
            migrate(settings)
            print(f"migrated {settings.database.describe()} to head")
        elif args.command == "webhook":
            sys.exit(
                send_webhook(
                    settings,
                    args.payment_id,
                    args.status,
                    url=args.url,
                    amount_cents=args.amount,
                    event_id=args.event_id,
                )
            )
        else:
            print(signature_header(settings.webhook_secret, args.body.encode()))
    except ConfigError as error:
        sys.exit(f"widget-store: {error}")


if __name__ == "__main__":
    main()
