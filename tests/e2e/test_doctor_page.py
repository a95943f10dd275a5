"""The doctor's page in headless Chromium: check, recognise, then a safety notice arrives."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import date

import pytest

from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import bearer, certify

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        async with s.container.sessions() as session, session.begin():
            for hid, level in (("H001", "3"), ("H002", "2")):
                await hospitals.add(session, hospitals.Hospital(hid, hid, "510502", level))
                await hospitals.add_key(session, hid, f.key_id(hid), f.public_b64(hid))
        await certify(s.container, valid_to=date(2030, 12, 31))
        yield s


async def index(stack: Stack, value: bytes) -> None:
    (p,) = await stack.container.ingest_service().process_batch([f.inbound(value, "H001")])
    assert p.outcome.value == "indexed", p.detail


async def test_recognise_in_the_page_then_see_the_withdrawal_notice(stack: Stack) -> None:
    today = date.today().isoformat()
    await index(stack, f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None))
    token = bearer(stack.container, "doctor", "H002", "dr-li")["Authorization"].split()[1]
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{stack.api_url}/doctor#token={token}")
            await page.wait_for_selector("#app:not([hidden])")
            assert "dr-li" in await page.inner_text("#who")
            assert "#token" not in page.url  # the token leaves the address bar
            assert await page.inner_text("#unread") == "0"

            await page.fill("#patient", f.PATIENT_A)
            await page.fill("#codes", "718-7, 4548-4")
            await page.click("#check-form button[type=submit]")
            await page.wait_for_selector("#answer:not([hidden])")
            decisions = await page.locator("td.decision").all_inner_texts()
            assert decisions == ["RECOGNIZABLE", "NO_PRIOR_RESULT"]
            await page.click("tr[data-item='0'] button.accept")
            await page.wait_for_selector("tr[data-item='0'] td.outcome:has-text('已互认')")
            assert "¥5.40" in await page.inner_text("tr[data-item='0'] td.outcome")

            await index(
                stack,
                f.lab_bundle(
                    status="entered-in-error",
                    effective=f"{today}T08:00:00+08:00",
                    last_updated=f"{today}T12:00:00+08:00",
                    version="2",
                ),
            )
            await page.click("#refresh")
            await page.wait_for_selector("li.notice")
            notice = await page.inner_text("li.notice")
            assert "已被撤回" in notice and f.PATIENT_A in notice and "reversed" in notice
            assert await page.inner_text("#unread") == "1"
            await page.click("li.notice button.mark-read")
            await page.wait_for_selector("li.notice.read")
            assert await page.inner_text("#unread") == "0"
            assert errors == []
        finally:
            await browser.close()


async def test_a_bad_token_asks_to_sign_in(stack: Stack) -> None:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(f"{stack.api_url}/doctor#token=not.a.token")
            await page.wait_for_selector("#login:not([hidden])")
            csp = (await page.request.get(f"{stack.api_url}/doctor")).headers
            assert "default-src 'self'" in csp["content-security-policy"]
        finally:
            await browser.close()
