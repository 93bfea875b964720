"""Fixtures for the tests that use the store in Chromium, the way a person would.

One `widget-store serve` (demo mode, SQLite, a two-second dispatch) serves the whole
package, and one Chromium drives it; each test gets a fresh browser context. When a test
fails, every page it had open is saved as a screenshot in test-artifacts/, beside the
server's log. A console error (a content-security-policy violation, an uncaught
exception, a failed request) fails the test, unless the test declared it expected.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import CHROMIUM
from tests.server import ServerProcess, running_server
from widget_store.config import PROJECT_ROOT

# Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
DISPATCH_S = 2
TIMEOUT_MS = 20_000
DESKTOP = {"width": 1280, "height": 900}

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

expect.set_options(timeout=TIMEOUT_MS)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so fixtures can tell whether it failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def failed(node: pytest.Item) -> bool:
    return any(report.failed for report in node.stash.get(REPORTS, {}).values())


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}; `apt-get install chromium` to run these")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def serve(folder: Path, template: Path, **settings: str) -> Iterator[ServerProcess]:
    """`widget-store serve` on a copy of the migrated template database."""
    database = folder / "store.sqlite"
    shutil.copy(template, database)
    env = {
        "WIDGET_STORE_DATABASE_URL": f"sqlite:///{database}",
        "WIDGET_STORE_DISPATCH_S": str(DISPATCH_S),
        "WIDGET_STORE_PAYMENT_TIMEOUT_S": "300",
        "WIDGET_STORE_LOG_LEVEL": "WARNING",
        "WIDGET_STORE_ENV": "demo",
        **settings,
    }
    with running_server(env, folder / "server.log") as server:
        yield server


@pytest.fixture(scope="package")
def shop(
    chromium: Browser, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The store in demo mode, shared by the package's tests (each restocks what it needs)."""
    yield from serve(tmp_path_factory.mktemp("shop"), sqlite_template)


ADMIN_TOKEN = "browser-tests-admin-token-0123"
PRODUCTION_PAYMENT_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def production_shop(
    chromium: Browser, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The store as deployed to staging: no crash button, /ops behind the token, a short
    payment wait, and the simulated provider's pages (mounted in production only on staging)."""
    yield from serve(
        tmp_path_factory.mktemp("production"),
        sqlite_template,
        WIDGET_STORE_ENV="production",
        WIDGET_STORE_STAGING="1",
        WIDGET_STORE_WEBHOOK_SECRET="whsec_browser_tests_not_the_demo_secret",
        WIDGET_STORE_ADMIN_TOKEN=ADMIN_TOKEN,
        WIDGET_STORE_PAYMENT_TIMEOUT_S=str(PRODUCTION_PAYMENT_TIMEOUT_S),
    )


@dataclass
class Console:
    """Console errors seen in a test, and the ones the test said it expects."""

    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, *fragments: str) -> None:
        """Errors containing any of these fragments are part of the scenario (a 409, say)."""
        self.expected.extend(fragments)

    def record(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.page.url if message.page else "?"
            self.errors.append(f"{where}: {message.text} ({message.location.get('url')})")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(f in e for f in self.expected)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def context(
    chromium: Browser, console: Console, request: pytest.FixtureRequest
) -> Iterator[BrowserContext]:
    context = chromium.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    context.on("console", console.record)
    context.on("weberror", lambda error: console.errors.append(f"uncaught: {error.error}"))
    yield context
    if failed(request.node):
        save_evidence(context, request)
    context.close()
    if not failed(request.node):
        assert not console.unexpected(), "console errors:\n" + "\n".join(console.unexpected())


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def save_evidence(context: BrowserContext, request: pytest.FixtureRequest) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    for number, open_page in enumerate(context.pages):
        try:
            open_page.screenshot(path=ARTIFACTS / f"{name}-{number}.png", full_page=True)
        except PlaywrightError as error:
            print(f"could not save a screenshot of {open_page.url}: {error}")
    for server_fixture in ("shop", "production_shop"):
        if server_fixture in request.fixturenames:
            server: ServerProcess = request.getfixturevalue(server_fixture)
            shutil.copy(server.log_path, ARTIFACTS / f"{name}-server.log")
    print(f"screenshots and server log saved in {ARTIFACTS}")
