"""Every saga step retries a lost database connection, on top of whatever it retried before."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from widget_store import durability, faults
from widget_store.payments import PaymentProviderUnavailable


def options_of(**given: Any) -> dict[str, Any]:
    return durability._retrying_database_blips(given)


def dropped_connection() -> sa.exc.OperationalError:
    return faults.injected_disconnect("a_step", "in")


def test_a_dropped_connection_and_a_server_shutting_down_are_database_blips() -> None:
    shutting_down = sa.exc.OperationalError("SELECT 1", None, Exception("shutting down"))
    assert durability.database_blip(dropped_connection())
    assert durability.database_blip(shutting_down)
    assert durability.database_blip(sa.exc.TimeoutError("QueuePool limit reached"))


def test_a_broken_query_or_a_provider_error_is_no_database_blip() -> None:
    constraint = sa.exc.IntegrityError("INSERT", None, Exception("unique violation"))
    assert not durability.database_blip(constraint)
    assert not durability.database_blip(PaymentProviderUnavailable("down"))
    assert not durability.database_blip(faults.InjectedFailure("injected"))


def test_a_step_that_retried_nothing_retries_database_blips_alone() -> None:
    options = options_of()
    assert options["retries_allowed"] is True
    assert options["max_attempts"] == durability.DB_RETRY_ATTEMPTS
    assert options["interval_seconds"] == durability.DB_RETRY_FIRST_S
    assert options["should_retry"](dropped_connection())
    assert not options["should_retry"](faults.InjectedFailure("permanent"))


def test_a_step_that_retried_some_errors_retries_those_and_database_blips() -> None:
    def provider_hiccup(error: BaseException) -> bool:
        return isinstance(error, PaymentProviderUnavailable)

    options = options_of(
        retries_allowed=True, max_attempts=8, interval_seconds=0.25, should_retry=provider_hiccup
    )
    assert options["should_retry"](PaymentProviderUnavailable("down"))
    assert options["should_retry"](dropped_connection())
    assert not options["should_retry"](ValueError("a bug"))
    assert (options["max_attempts"], options["interval_seconds"]) == (8, 0.25)


def test_a_step_that_retried_everything_keeps_its_options() -> None:
    given = {"retries_allowed": True, "max_attempts": 3}
    assert options_of(**given) == given
