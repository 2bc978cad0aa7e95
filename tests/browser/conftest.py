"""Headless Debian Chromium driven by Playwright (never Playwright's own browser download).

Screenshots go to test-artifacts/screenshots/ (ignored by git): look at them when the pages change.

Without a browser these tests skip, and the run ends with a banner saying so (a "3 skipped" alone is easily
missed); where the environment says `CI`, they fail instead, since a CI machine must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import PROJECT_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_DIR / "test-artifacts" / "screenshots"


def browser_tests_must_run() -> bool:
    """CI services set `CI` (GitHub, GitLab, ...: `true`); there a missing browser is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def cannot_run(reason: str) -> None:
    """Skip (the run ends with a banner saying so: tests/conftest.py), or fail where CI is set."""
    if browser_tests_must_run():
        pytest.fail(f"{reason}, and CI is set: the browser tests must run here", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium():
    """Playwright's sync API runs an event loop in this thread while the browser is open; the tests' own
    database calls are still plain synchronous code, so Django is told not to refuse them meanwhile."""
    if not Path(CHROMIUM).exists():
        cannot_run("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright import sync_api as playwright_api
    except ImportError:
        cannot_run("playwright is not installed (requirements-test.txt)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(chromium):
    """A fresh 1280×800 page."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="Europe/Berlin")
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def screenshot(page) -> Iterator:
    """`screenshot("name")` saves the page at 1280 px wide, and at 1400 px when `wide=True`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, wide: bool = False) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}-1280.png"), full_page=True)
        if wide:
            page.set_viewport_size({"width": 1400, "height": 800})
            page.screenshot(path=str(SCREENSHOTS / f"{name}-1400.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 800})

    yield take


@pytest.fixture
def logged_in(page, live_server, django_user_model):
    django_user_model.objects.create_superuser("operator", password="a long pass phrase")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a long pass phrase")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    return page
