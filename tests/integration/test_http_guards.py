"""Guards around the whole app: body size limit, security headers, no leaks in errors."""

from __future__ import annotations

import pytest

from tests.helpers import Store, new_key


def test_a_body_over_one_megabyte_is_refused_with_413(store: Store) -> None:
    huge = b'{"items": [' + b" " * (1024 * 1024) + b"]}"
    response = store.http.post(
        f"/checkout/{new_key()}", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "over 1048576 bytes" in response.json()["detail"]
    assert store.scalar("SELECT count(*) FROM orders") == 0


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(store: Store) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * (64 * 1024)

    response = store.http.post(
        f"/checkout/{new_key()}", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_html_pages_carry_a_content_security_policy(store: Store) -> None:
    page = store.http.get("/")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page.text, "no inline script"


def test_json_responses_carry_nosniff(store: Store) -> None:
    assert store.http.get("/products").headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e%2f%2e%2e%2fwidget_store%2fconfig.py",
        "/static//etc/passwd",
    ],
)
def test_static_files_cannot_escape_their_folder(store: Store, path: str) -> None:
    response = store.http.get(path)
    assert response.status_code in (404, 400)
    assert "WIDGET_STORE" not in response.text and "root:" not in response.text
