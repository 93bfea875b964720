"""Fixtures the integration tests share: the store as production runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Store, production_settings
from widget_store.config import Settings


@pytest.fixture
def production(settings: Settings) -> Iterator[Store]:
    """The store in production mode: its own webhook secret, the admin token required."""
    with Store.running(production_settings(settings)) as store:
        yield store
