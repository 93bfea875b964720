"""Settings come from the environment, with safe defaults, and fail fast on bad values."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from widget_store.config import (
    DEMO_WEBHOOK_SECRET,
    EMBEDDED_DATABASE,
    ConfigError,
    Environment,
    LogFormat,
    Settings,
    Tracing,
)


def test_defaults_run_the_demo_on_the_embedded_sqlite_file() -> None:
    settings = Settings.from_env({})
    assert settings.database.is_sqlite
    assert settings.database.url.database == str(EMBEDDED_DATABASE)
    assert EMBEDDED_DATABASE.parent.name == ".data"
    assert settings.payment_timeout_s == 900
    assert settings.dispatch_s == 10
    assert settings.webhook_secret == DEMO_WEBHOOK_SECRET
    assert settings.env is Environment.DEMO


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db:5432/shop",
        "postgres://u:p@db:5432/shop",
        "postgresql+psycopg://u:p@db/shop",
    ],
)
def test_a_plain_postgres_url_gets_the_right_driver_for_each_consumer(url: str) -> None:
    database = Settings.from_env({"WIDGET_STORE_DATABASE_URL": url}).database
    assert not database.is_sqlite
    assert database.system_url.startswith("postgresql://u:p@db")
    assert database.async_url.startswith("postgresql+asyncpg://u:p@db")
    assert database.sync_url.startswith("postgresql+psycopg://")
    assert "p@" not in database.describe()


def test_libpq_options_in_the_url_reach_asyncpg_under_its_own_names() -> None:
    url = "postgresql://u:p@db/shop?sslmode=require&connect_timeout=5&application_name=ws"
    database = Settings.from_env({"WIDGET_STORE_DATABASE_URL": url}).database
    store = sa.make_url(database.async_url)
    assert dict(store.query) == {"ssl": "require", "timeout": "5"}
    assert database.application_name == "ws"  # a server setting, for asyncpg
    assert sa.make_url(database.sync_url).query["sslmode"] == "require"  # psycopg's own


def test_a_sqlite_file_url_is_accepted_too() -> None:
    database = Settings.from_env({"WIDGET_STORE_DATABASE_URL": "sqlite:////tmp/x.sqlite"}).database
    assert database.async_url == "sqlite+aiosqlite:////tmp/x.sqlite"
    assert database.system_url == "sqlite:////tmp/x.sqlite"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WIDGET_STORE_DATABASE_URL", "mysql://x/y", "must be a postgresql://"),
        ("WIDGET_STORE_DATABASE_URL", "not a url", "not a URL"),
        ("WIDGET_STORE_PAYMENT_TIMEOUT_S", "soon", "must be a number"),
        ("WIDGET_STORE_PAYMENT_TIMEOUT_S", "0", ">= 0.1"),
        ("WIDGET_STORE_DISPATCH_S", "-1", ">= 0"),
        ("WIDGET_STORE_DISPATCH_S", "nan", "finite"),
        ("WIDGET_STORE_ENV", "staging", "'demo' or 'production'"),
        ("WIDGET_STORE_NATS_URL", "127.0.0.1:4222", "must be nats://"),
        ("WIDGET_STORE_NATS_URL", "nats://a:4222,http://b", "must be nats://"),
        ("WIDGET_STORE_OUTBOX_POLL_S", "0", ">= 0.01"),
        ("WIDGET_STORE_REQUEST_READ_TIMEOUT_S", "0", ">= 0.1"),
        ("WIDGET_STORE_MAX_CONNECTIONS", "none", "number of connections"),
        ("WIDGET_STORE_CONNECTION_MAX_AGE_S", "-5", ">= 0"),
        ("WIDGET_STORE_CONNECTION_MAX_AGE_S", "forever", "must be a number"),
        ("WIDGET_STORE_CONSUMER_DATABASE_URL", "mysql://x/y", "must be a postgresql://"),
        ("WIDGET_STORE_LOG_FORMAT", "xml", "one of text, json"),
        ("WIDGET_STORE_METRICS", "yes", "0 or 1"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "one of otlp, console or none"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value)


def test_numbers_and_the_environment_are_read() -> None:
    settings = Settings.from_env(
        {
            "WIDGET_STORE_PAYMENT_TIMEOUT_S": "2.5",
            "WIDGET_STORE_DISPATCH_S": "0",
            "WIDGET_STORE_ENV": "Production",
            "WIDGET_STORE_WEBHOOK_SECRET": "s3cret",
        }
    )
    assert (settings.payment_timeout_s, settings.dispatch_s) == (2.5, 0.0)
    assert settings.is_production
    assert settings.webhook_secret == "s3cret"


def test_the_event_stream_is_off_until_a_nats_url_is_set() -> None:
    assert Settings.from_env({}).nats_url is None
    assert Settings.from_env({}).consumer_database is None  # the store's own database
    settings = Settings.from_env(
        {
            "WIDGET_STORE_NATS_URL": "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            "WIDGET_STORE_OUTBOX_POLL_S": "0.2",
            "WIDGET_STORE_CONSUMER_DATABASE_URL": "postgresql://u@h/projections",
        }
    )
    assert settings.nats_url == "nats://127.0.0.1:4222, nats://127.0.0.1:4223"
    assert settings.outbox_poll_s == 0.2
    assert settings.consumer_database is not None
    assert settings.consumer_database.async_url == "postgresql+asyncpg://u@h/projections"


PRODUCTION = {
    "WIDGET_STORE_ENV": "production",
    "WIDGET_STORE_WEBHOOK_SECRET": "whsec_a_real_secret_Kq83vLx0",
    "WIDGET_STORE_ADMIN_TOKEN": "a-long-admin-token-5f0c9e2b71",
}


def test_production_starts_with_its_own_secret_and_an_admin_token() -> None:
    Settings.from_env(PRODUCTION).check_safe_to_start()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"WIDGET_STORE_WEBHOOK_SECRET": ""}, "not the demo secret"),
        ({"WIDGET_STORE_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET}, "not the demo secret"),
        ({"WIDGET_STORE_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET + " "}, "not the demo secret"),
        ({"WIDGET_STORE_WEBHOOK_SECRET": " " + DEMO_WEBHOOK_SECRET}, "not the demo secret"),
        ({"WIDGET_STORE_ADMIN_TOKEN": ""}, "needs WIDGET_STORE_ADMIN_TOKEN"),
        ({"WIDGET_STORE_METRICS_TOKEN": "short"}, "WIDGET_STORE_METRICS_TOKEN is too weak"),
    ],
)
def test_production_refuses_demo_defaults(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**PRODUCTION, **change}).check_safe_to_start()


@pytest.mark.parametrize("variable", ["WIDGET_STORE_WEBHOOK_SECRET", "WIDGET_STORE_ADMIN_TOKEN"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "it has 1 characters, and needs at least 24"),
        ("   ", "it is blank"),
        ("short-but-mixed-42", "it has 18 characters, and needs at least 24"),
        ("a" * 16, "it has 16 characters"),
        ("a" * 40, "only 1 distinct characters"),
        ("ab12" * 10, "only 4 distinct characters"),
        ("abcdefghijklmnopqrstuvwxyz", "one kind of character only"),
        ("a-real-token-with-a-space-5f0c9e2b71 ", "white space"),
    ],
    ids=[
        "one-character",
        "blank",
        "short",
        "sixteen-identical",
        "long-but-one-character",
        "a-short-pattern",
        "one-kind",
        "trailing-space",
    ],
)
def test_production_refuses_a_secret_without_real_entropy_and_says_why(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**PRODUCTION, variable: value}).check_safe_to_start()
    assert variable in str(refused.value)
    assert "too weak" in str(refused.value)
    assert message in str(refused.value)
    assert "secrets.token_urlsafe" in str(refused.value), "says how to make a good one"
    if value.strip():
        assert value.strip() not in str(refused.value), "never repeats the secret"


def test_production_refuses_the_same_value_for_the_admin_token_and_the_webhook_secret() -> None:
    same = {**PRODUCTION, "WIDGET_STORE_ADMIN_TOKEN": PRODUCTION["WIDGET_STORE_WEBHOOK_SECRET"]}
    with pytest.raises(ConfigError, match="must differ"):
        Settings.from_env(same).check_safe_to_start()


@pytest.mark.parametrize(
    "secret",
    [
        "0123456789abcdef0123456789abcdef",  # secrets.token_hex(16)
        "Zq3_x8Vb-2LmN0pRt7sWyA1cE5gH9jKo",  # secrets.token_urlsafe(24)
        "correct horse battery staple",  # a passphrase: letters and spaces
    ],
)
def test_production_accepts_generated_secrets_and_passphrases(secret: str) -> None:
    Settings.from_env({**PRODUCTION, "WIDGET_STORE_WEBHOOK_SECRET": secret}).check_safe_to_start()


def test_the_demo_starts_with_its_defaults() -> None:
    Settings.from_env({}).check_safe_to_start()


def test_observability_defaults_are_text_logs_metrics_on_and_tracing_off() -> None:
    settings = Settings.from_env({})
    assert settings.log_format is LogFormat.TEXT
    assert settings.metrics and settings.metrics_token is None and settings.metrics_dir is None
    assert settings.tracing is None


@pytest.mark.parametrize(
    ("env", "tracing"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, Tracing("otlp")),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, Tracing("otlp")),
        (
            {"OTEL_TRACES_EXPORTER": "Console", "OTEL_SERVICE_NAME": "shop"},
            Tracing("console", "shop"),
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"},
            Tracing("otlp", export_logs=True),
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
        ({"OTEL_SERVICE_NAME": "shop"}, None),
    ],
)
def test_tracing_is_switched_by_the_standard_otel_variables(
    env: dict[str, str], tracing: Tracing | None
) -> None:
    assert Settings.from_env(env).tracing == tracing


def test_only_the_http_otlp_exporter_ships() -> None:
    with pytest.raises(ConfigError, match="http/protobuf"):
        Settings.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_observability_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "WIDGET_STORE_LOG_FORMAT": "JSON",
            "WIDGET_STORE_METRICS": "0",
            "WIDGET_STORE_METRICS_TOKEN": "scrape-token",
            "PROMETHEUS_MULTIPROC_DIR": "/run/widget-store-metrics",
        }
    )
    assert settings.log_format is LogFormat.JSON
    assert not settings.metrics and settings.metrics_token == "scrape-token"
    assert str(settings.metrics_dir) == "/run/widget-store-metrics"
