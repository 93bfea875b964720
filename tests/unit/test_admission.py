"""The health signal's arithmetic, and the bound on checkouts starting at once."""

from __future__ import annotations

import pytest

from widget_store.admission import Progress
from widget_store.config import Database, Settings
from widget_store.domain import CheckoutStillStarting, OutOfStock


def test_an_idle_store_is_healthy_however_long_it_idles() -> None:
    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    now[0] = 3600
    assert progress.stalled_for() == 0
    with progress.working():
        now[0] += 5
        assert progress.stalled_for() == 5, "counted from when work began after the lull"


def test_work_that_fails_is_not_progress_but_a_domain_answer_is() -> None:
    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    with progress.working():  # long-running work keeps the count above zero
        for error in (RuntimeError("database is locked"), CheckoutStillStarting("retry")):
            now[0] += 10
            with pytest.raises(type(error)), progress.working():
                raise error
        assert progress.stalled_for() == 20
        with pytest.raises(OutOfStock), progress.working():
            raise OutOfStock(1, [])
        assert progress.stalled_for() == 0


@pytest.mark.parametrize(
    ("raw", "url", "limit"),
    [
        (None, "sqlite:////tmp/x.sqlite", 8),
        (None, "postgresql://u@h/db", None),
        ("3", "postgresql://u@h/db", 3),
        ("0", "sqlite:////tmp/x.sqlite", None),
    ],
    ids=["sqlite-default", "postgres-default", "set", "zero-is-no-bound"],
)
def test_the_bound_is_the_embedded_default_or_the_setting(
    raw: str | None, url: str, limit: int | None
) -> None:
    env = {"WIDGET_STORE_DATABASE_URL": url}
    if raw is not None:
        env["WIDGET_STORE_MAX_STARTING_CHECKOUTS"] = raw
    settings = Settings.from_env(env)
    assert settings.database == Database.parse(url)
    assert settings.starting_checkout_limit == limit
