"""Fixtures shared by the end-to-end tests: installations whose workers run as
processes, and the headless Chromium of the web page tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from broker.bootstrap import Container
from broker.settings import Settings
from tests import factories as f
from tests.e2e.test_own_state import cleanup
from tests.e2e.test_worker_faults import Site

# Debian's Chromium (`make install-browser`), driven by Playwright (no browser download).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def site(
    settings: Settings, container: Container, kafka: str, tmp_path: Path
) -> AsyncIterator[Site]:
    """An installation whose workers run as processes; any left running are killed."""
    f.receipt_trust(settings.keys_dir)  # the receipt key, as `mrb keys init` makes it
    site = Site(settings, container, kafka, tmp_path / "logs", settings.resolved_database_url)
    yield site
    async with cleanup(*site.started):  # SIGKILLs any worker still running
        pass


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium per test process: starting Playwright and the browser takes
    1-1.5 s, once instead of for each test. The browser tests run in the session's event
    loop (`pytest.mark.asyncio(loop_scope="session")`), the one Playwright runs in."""
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(chromium: Any) -> AsyncIterator[Any]:
    """The shared Chromium; what a test opens in it (`new_page`, `new_context`: cookies
    and storage of their own) is closed after the test, so no test sees another's."""
    yield chromium
    for context in list(chromium.contexts):
        await context.close()
