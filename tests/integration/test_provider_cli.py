"""`widget-store webhook` by hand: a database it cannot read is a clear message, never a
stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from widget_store.config import Database, Settings
from widget_store.provider_cli import send_webhook


def test_a_webhook_whose_amount_cannot_be_read_says_how_to_give_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = Settings(database=Database.parse(f"sqlite:///{tmp_path / 'missing' / 'x.sqlite'}"))

    code = send_webhook(nowhere, "pay_1", "paid", url="http://127.0.0.1:9")

    assert code == 2
    error = capsys.readouterr().err
    assert "could not read payment pay_1's amount" in error and "give --amount" in error
    assert "Traceback" not in error


def test_a_database_without_the_providers_table_says_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = Settings(database=Database.parse(f"sqlite:///{tmp_path / 'empty.sqlite'}"))

    assert send_webhook(empty, "pay_1", "paid", url="http://127.0.0.1:9") == 2
    assert "give --amount" in capsys.readouterr().err
