"""Settings, read from the environment in one place.

Every variable is documented in the README's settings table. Defaults are safe for a
demo on a laptop; `WIDGET_STORE_ENV=production` refuses the demo-only ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa

from widget_store import __version__

# The package lives at <project>/widget_store, so the project root is one level up.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The embedded default: one SQLite file for DBOS's system tables and the store's tables.
# dbos-config.yaml names the same file for `dbos migrate` (see the comment there).
EMBEDDED_DATABASE = PROJECT_ROOT / ".data" / "widget_store.sqlite"
DEMO_WEBHOOK_SECRET = "whsec_demo_widget_store_not_secret"
# What production asks of its webhook secret and admin token: long, and not a pattern
# (sixteen identical characters are sixteen characters long, and guessable).
MIN_SECRET_LENGTH = 24
MIN_DISTINCT_CHARACTERS = 10
MIN_CHARACTER_CLASSES = 2  # of: lower case, upper case, digits, anything else
# Checkouts the embedded SQLite file starts at once: about what one writer gets through
# in a second (7-9 purchases/s measured), so an admitted checkout answers promptly.
EMBEDDED_STARTING_CHECKOUTS = 8
# Kept-alive connections' lifetime with several workers (serving.py): short enough that a
# pool of connections opened at once rebalances within seconds, long enough that a
# reconnect (a loopback handshake) is rare next to the requests each connection carries.
CONNECTION_MAX_AGE_S = 10.0
HOW_TO_MAKE_A_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Environment(StrEnum):
    DEMO = "demo"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"  # for people: one readable line per record
    JSON = "json"  # for log pipelines: one JSON object per line


# The OpenTelemetry SDK reads the rest of its OTEL_* variables itself (endpoint, headers,
# sampler, resource attributes); these are the ones that decide whether tracing is on.
TRACES_EXPORTERS = ("otlp", "console")
DEFAULT_SERVICE_NAME = "widget-store"


@dataclass(frozen=True)
class Tracing:
    """OpenTelemetry tracing, on when the standard OTEL_* variables ask for an exporter."""

    exporter: str = "otlp"  # one of TRACES_EXPORTERS
    service_name: str = DEFAULT_SERVICE_NAME
    export_logs: bool = False  # OTEL_LOGS_EXPORTER=otlp: DBOS's log records too

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracing | None:
        """None (off) unless OTEL_TRACES_EXPORTER or an OTLP endpoint is set.

        OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off whatever else
        is set, as the OpenTelemetry specification says they should.
        """
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        if exporter == "none" or not (exporter or endpoint):
            return None
        exporter = exporter or "otlp"
        if exporter not in TRACES_EXPORTERS:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER must be one of {', '.join(TRACES_EXPORTERS)} "
                f"or none, not {exporter!r}"
            )
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if exporter == "otlp" and protocol.strip() != "http/protobuf":
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL: the store ships the http/protobuf OTLP "
                f"exporter only, not {protocol!r}"
            )
        logs = env.get("OTEL_LOGS_EXPORTER", "").strip().lower()
        return cls(
            exporter=exporter,
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
            export_logs=logs == "otlp",
        )


@dataclass(frozen=True)
class Database:
    """Where the store lives, and the driver-specific URLs each consumer needs."""

    url: sa.URL

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def system_url(self) -> str:
        """The URL DBOS's system database takes (it chooses its own driver)."""
        name = "sqlite" if self.is_sqlite else "postgresql"
        return self.url.set(drivername=name).render_as_string(hide_password=False)

    @property
    def async_url(self) -> str:
        """The URL of the store's async engine: asyncpg on PostgreSQL, aiosqlite on SQLite.

        asyncpg, not psycopg: the store's own statements run on the event loop, and
        asyncpg's protocol is native code with each statement prepared once per
        connection, where psycopg's async mode spent about a quarter of a purchase's
        sampled CPU (bench/results/profile-summary.md). libpq's `sslmode` and
        `connect_timeout` in the URL become asyncpg's `ssl` and `timeout`; its
        `application_name` is a server setting there (`application_name`, below).
        """
        if self.is_sqlite:
            return self.url.set(drivername="sqlite+aiosqlite").render_as_string(False)
        renamed = {"sslmode": "ssl", "connect_timeout": "timeout"}
        query = {
            renamed.get(key, key): value
            for key, value in self.url.query.items()
            if key != "application_name"
        }
        url = self.url.set(drivername="postgresql+asyncpg", query=query)
        return url.render_as_string(hide_password=False)

    @property
    def application_name(self) -> str:
        """What the store's connections call themselves in `pg_stat_activity`."""
        given = self.url.query.get("application_name")
        return given if isinstance(given, str) and given else "widget-store"

    @property
    def sync_url(self) -> str:
        """The URL Alembic migrates with."""
        name = "sqlite" if self.is_sqlite else "postgresql+psycopg"
        return self.url.set(drivername=name).render_as_string(hide_password=False)

    def describe(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

    @classmethod
    def parse(cls, raw: str | None, variable: str = "WIDGET_STORE_DATABASE_URL") -> Database:
        """Accept a PostgreSQL URL in its plain form, a sqlite:/// file, or nothing."""
        if not raw:
            return cls(sa.make_url(f"sqlite:///{EMBEDDED_DATABASE}"))
        try:
            url = sa.make_url(raw)
        except sa.exc.ArgumentError as error:
            raise ConfigError(f"{variable} is not a URL: {error}") from None
        backend = url.get_backend_name()
        if backend == "postgres":  # the Heroku-style alias
            url = url.set(drivername="postgresql")
        elif backend not in ("postgresql", "sqlite"):
            raise ConfigError(
                f"{variable} must be a postgresql:// URL "
                f"(or sqlite:///path for a file), not {backend}://"
            )
        if url.get_backend_name() == "sqlite" and not url.database:
            raise ConfigError(f"{variable}: a sqlite URL needs a file path")
        return cls(url)


@dataclass(frozen=True)
class Settings:
    database: Database
    payment_timeout_s: float = 900.0
    dispatch_s: float = 10.0
    provider_redeliver_s: float = 10.0  # the simulated provider's retry of unanswered webhooks
    webhook_secret: str = DEMO_WEBHOOK_SECRET
    env: Environment = Environment.DEMO
    admin_token: str | None = None
    compensation_attempts: int = 8
    dead_letter_retry_s: float = 3600.0
    fault_injection: bool = False
    workers: int = 1
    stuck_after_s: float = 120.0
    executor_id: str = "widget-store-0"
    app_version: str = __version__
    log_level: str = "INFO"
    db_pool_size: int = 16  # connections per process, DBOS's and the store's together
    staging: bool = False  # production that mounts the simulated provider anyway
    public_docs: bool = False  # /docs and /openapi.json in production too
    # The HTTP server's limits, per process (widget_store/serving.py).
    request_read_timeout_s: float = 15.0
    max_connections: int = 1000
    # With several workers, a kept-alive connection closes (at a response) after a
    # lifetime drawn from [half, all] of this, so connections rebalance between workers.
    connection_max_age_s: float = CONNECTION_MAX_AGE_S
    # Checkouts one process starts at once (None: the backend's default; 0: no bound).
    max_starting_checkouts: int | None = None
    # /healthz fails once work has been in flight this long with none finishing well.
    unhealthy_after_s: float = 30.0

    @property
    def starting_checkout_limit(self) -> int | None:
        """The bound on checkouts starting at once: SQLite's one writer takes few; None
        means no bound (PostgreSQL's default)."""
        if self.max_starting_checkouts is None:
            return EMBEDDED_STARTING_CHECKOUTS if self.database.is_sqlite else None
        return self.max_starting_checkouts or None

    @property
    def mounts_simulated_provider(self) -> bool:
        """The simulated provider's pages are the demo's; production mounts them only
        for a store explicitly marked as staging."""
        return not self.is_production or self.staging

    # The event stream (README: Order events on NATS). No URL, no relay: the outbox fills.
    nats_url: str | None = None
    outbox_poll_s: float = 0.5
    # Where `widget-store consume` keeps its projection; None means the store's database.
    consumer_database: Database | None = None
    log_format: LogFormat = LogFormat.TEXT
    metrics: bool = True
    metrics_token: str | None = None
    # Where gunicorn's workers share their metrics (prometheus-client's multiprocess
    # mode); `serve` chooses it when unset, and in-process apps need none.
    metrics_dir: Path | None = None
    tracing: Tracing | None = None

    @property
    def executors(self) -> frozenset[str]:
        """The DBOS executor IDs of this deployment's app processes (one per worker slot)."""
        slots = {f"widget-store-{slot}" for slot in range(self.workers)}
        return frozenset({*slots, self.executor_id})

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    def check_safe_to_start(self) -> None:
        """Refuse, in production, the defaults that are only fit for a demo."""
        if not self.is_production:
            return
        if self.fault_injection:
            raise ConfigError("WIDGET_STORE_FAULT_INJECTION is for tests; never in production")
        if self.webhook_secret.strip() == DEMO_WEBHOOK_SECRET:
            raise ConfigError(
                "WIDGET_STORE_ENV=production needs its own WIDGET_STORE_WEBHOOK_SECRET, "
                "not the demo secret"
            )
        if not self.admin_token:
            raise ConfigError(
                "WIDGET_STORE_ENV=production needs WIDGET_STORE_ADMIN_TOKEN, "
                f"at least {MIN_SECRET_LENGTH} characters"
            )
        secrets_to_check = [
            ("WIDGET_STORE_WEBHOOK_SECRET", self.webhook_secret),
            ("WIDGET_STORE_ADMIN_TOKEN", self.admin_token),
        ]
        if self.metrics_token is not None:
            secrets_to_check.append(("WIDGET_STORE_METRICS_TOKEN", self.metrics_token))
        for variable, secret in secrets_to_check:
            weakness = secret_weakness(secret)
            if weakness:
                raise ConfigError(
                    f"{variable} is too weak for production: {weakness}; "
                    f"make one with {HOW_TO_MAKE_A_SECRET}"
                )
        if self.webhook_secret == self.admin_token:
            raise ConfigError(
                "WIDGET_STORE_ADMIN_TOKEN must differ from WIDGET_STORE_WEBHOOK_SECRET: "
                "whoever learns one must not hold the other"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every WIDGET_STORE_* variable, failing fast on a bad value."""
        env = os.environ if environ is None else environ

        def number(name: str, default: float, minimum: float, unit: str = "seconds") -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number of {unit}, not {raw!r}") from None
            if value < minimum or value != value or value == float("inf"):
                raise ConfigError(f"{name} must be a finite number >= {minimum}, not {raw!r}")
            return value

        def flag(name: str) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw in ("", "0", "false", "no"):
                return False
            if raw in ("1", "true", "yes"):
                return True
            raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")

        def choice(name: str, kind: type[StrEnum], default: StrEnum) -> str:
            raw = env.get(name, "").strip().lower() or default.value
            allowed = [member.value for member in kind]
            if raw not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
            return raw

        def switch(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw not in ("0", "1"):
                raise ConfigError(f"{name} must be 0 or 1, not {raw!r}")
            return raw == "1"

        raw_env = env.get("WIDGET_STORE_ENV", Environment.DEMO.value).strip().lower()
        try:
            environment = Environment(raw_env)
        except ValueError:
            raise ConfigError(
                f"WIDGET_STORE_ENV must be 'demo' or 'production', not {raw_env!r}"
            ) from None
        consumer_url = env.get("WIDGET_STORE_CONSUMER_DATABASE_URL", "").strip()
        return cls(
            database=Database.parse(env.get("WIDGET_STORE_DATABASE_URL", "").strip()),
            payment_timeout_s=number("WIDGET_STORE_PAYMENT_TIMEOUT_S", 900.0, 0.1),
            dispatch_s=number("WIDGET_STORE_DISPATCH_S", 10.0, 0.0),
            provider_redeliver_s=number("WIDGET_STORE_PROVIDER_REDELIVER_S", 10.0, 0.1),
            webhook_secret=env.get("WIDGET_STORE_WEBHOOK_SECRET") or DEMO_WEBHOOK_SECRET,
            env=environment,
            admin_token=env.get("WIDGET_STORE_ADMIN_TOKEN") or None,
            compensation_attempts=int(
                number("WIDGET_STORE_COMPENSATION_ATTEMPTS", 8, 1, "attempts")
            ),
            dead_letter_retry_s=number("WIDGET_STORE_DEAD_LETTER_RETRY_S", 3600.0, 1.0),
            fault_injection=env.get("WIDGET_STORE_FAULT_INJECTION", "") == "1",
            workers=int(number("WIDGET_STORE_WORKERS", 1, 1, "processes")),
            stuck_after_s=number("WIDGET_STORE_STUCK_AFTER_S", 120.0, 0.0),
            executor_id=env.get("WIDGET_STORE_EXECUTOR_ID") or "widget-store-0",
            app_version=env.get("WIDGET_STORE_APP_VERSION") or __version__,
            log_level=(env.get("WIDGET_STORE_LOG_LEVEL") or "INFO").upper(),
            db_pool_size=int(number("WIDGET_STORE_DB_POOL_SIZE", 16, 4, "connections")),
            staging=flag("WIDGET_STORE_STAGING"),
            public_docs=flag("WIDGET_STORE_PUBLIC_DOCS"),
            request_read_timeout_s=number("WIDGET_STORE_REQUEST_READ_TIMEOUT_S", 15.0, 0.1),
            max_connections=int(number("WIDGET_STORE_MAX_CONNECTIONS", 1000, 1, "connections")),
            connection_max_age_s=number(
                "WIDGET_STORE_CONNECTION_MAX_AGE_S", CONNECTION_MAX_AGE_S, 0.0
            ),
            max_starting_checkouts=_optional_count(env, "WIDGET_STORE_MAX_STARTING_CHECKOUTS"),
            unhealthy_after_s=number("WIDGET_STORE_UNHEALTHY_AFTER_S", 30.0, 0.1),
            nats_url=_nats_url(env.get("WIDGET_STORE_NATS_URL", "").strip()),
            outbox_poll_s=number("WIDGET_STORE_OUTBOX_POLL_S", 0.5, 0.01),
            consumer_database=Database.parse(consumer_url, "WIDGET_STORE_CONSUMER_DATABASE_URL")
            if consumer_url
            else None,
            log_format=LogFormat(choice("WIDGET_STORE_LOG_FORMAT", LogFormat, LogFormat.TEXT)),
            metrics=switch("WIDGET_STORE_METRICS", True),
            metrics_token=env.get("WIDGET_STORE_METRICS_TOKEN") or None,
            metrics_dir=Path(raw_dir) if (raw_dir := env.get("PROMETHEUS_MULTIPROC_DIR")) else None,
            tracing=Tracing.from_env(env),
        )


def secret_weakness(secret: str) -> str | None:
    """What makes a secret too easy to guess, in words (never the secret); None if nothing.

    Length alone is not enough: sixteen identical characters are long and guessable. So
    it needs length, many distinct characters and more than one kind of character.
    """
    if not secret.strip():
        return "it is blank"
    if secret != secret.strip():
        return "it starts or ends with white space (a copy-and-paste slip?)"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"it has {len(secret)} characters, and needs at least {MIN_SECRET_LENGTH}"
    distinct = len(set(secret))
    if distinct < MIN_DISTINCT_CHARACTERS:
        return (
            f"it has only {distinct} distinct characters, and needs at least "
            f"{MIN_DISTINCT_CHARACTERS}"
        )
    classes = sum(
        any(test(ch) for ch in secret)
        for test in (
            str.islower,
            str.isupper,
            str.isdigit,
            lambda ch: not (ch.islower() or ch.isupper() or ch.isdigit()),
        )
    )
    if classes < MIN_CHARACTER_CLASSES:
        return (
            "it uses one kind of character only; mix letters with digits or symbols "
            "(or upper with lower case)"
        )
    return None


def _optional_count(env: Mapping[str, str], name: str) -> int | None:
    """A whole number >= 0, or None when unset (the default applies)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"{name} must be a whole number >= 0 (0: no bound), not {raw!r}")
    return int(raw)


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _nats_url(raw: str) -> str | None:
    """Accept nothing (no relay) or NATS server URLs, comma-separated for a cluster."""
    if not raw:
        return None
    for server in raw.split(","):
        scheme, _, rest = server.strip().partition("://")
        if scheme not in NATS_SCHEMES or not rest:
            raise ConfigError(
                f"WIDGET_STORE_NATS_URL must be nats://host:port (comma-separated for "
                f"several servers), not {server.strip()!r}"
            )
    return raw
