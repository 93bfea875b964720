"""The benchmarks' process readings survive processes that end while being read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import metrics


def test_a_process_that_ends_while_its_threads_are_listed_has_no_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ended(self: Path) -> object:
        raise FileNotFoundError(str(self))

    monkeypatch.setattr(Path, "iterdir", ended)  # listed, then gone: PostgreSQL's backends
    assert metrics._children(os.getpid()) == []


def test_a_thread_that_ends_while_its_children_are_read_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Path.read_text

    def vanishing(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "children":
            raise ProcessLookupError(str(self))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", vanishing)
    assert metrics.process_tree(os.getpid()) == [os.getpid()]
