"""The web pages in headless Chromium: the doctor's (check, recognise, a safety notice
arrives) and finance's (savings as charts)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest

from broker.domain.actors import Actor, Role
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.runtime import Stack, running_stack
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import bearer, certify, seed_hospitals

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        await seed_hospitals(s.container, "H001", hospitals.Hospital("H002", "H002", "510502", "2"))
        await certify(s.container, valid_to=date(2030, 12, 31))
        yield s


async def index(stack: Stack, value: bytes) -> None:
    (p,) = await stack.container.ingest_service().process_batch([f.inbound(value, "H001")])
    assert p.outcome.value == "indexed", p.detail


async def test_recognise_in_the_page_then_see_the_withdrawal_notice(stack: Stack) -> None:
    today = date.today().isoformat()
    await index(stack, f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None))
    token = (await bearer(stack.container, "doctor", "H002", "dr-li"))["Authorization"].split()[1]
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
            await page.wait_for_selector("tr.timeline-row")  # via /fhir, audited
            (row,) = await page.locator("tr.timeline-row").all_inner_texts()
            assert "H001" in row and "DiagnosticReport" in row and "final" in row
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


async def test_the_finance_page_charts_the_ledger(stack: Stack) -> None:
    today = date.today().isoformat()
    await index(stack, f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None))
    c = stack.container
    hb, plt = Order("http://loinc.org", "718-7"), Order("http://loinc.org", "777-3")
    doctor = Actor("dr-li", Role.DOCTOR, "H002")
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", datetime.now(UTC), (hb, plt)), doctor,
    )  # fmt: skip
    await record_outcomes(
        c.outcome_uow(),
        c.reference_rules().catalog,
        answer.check_id,
        [
            OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED)),
            OutcomeRequest(1, OutcomeInput(OutcomeKind.DECLINED, DeclineReason.KEY_DECISION)),
        ],
        doctor,
    )
    token = (await bearer(c, "platform-finance", "*", "finance-zhao"))["Authorization"].split()[1]
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{stack.api_url}/finance#token={token}")
            await page.wait_for_selector("#by-hospital rect.bar")
            bars = page.locator("#by-hospital rect.bar")
            assert await bars.count() == 1
            assert await bars.first.get_attribute("data-key") == "H002"
            assert "¥5.40" in await page.inner_text("#by-hospital")
            assert "血红蛋白" in await page.inner_text("#by-item")
            assert "KEY_DECISION" in await page.inner_text("#by-reason")
            totals = await page.inner_text("#totals")
            assert "1 次互认" in totals and "净 net ¥5.40" in totals
            await page.fill("#from", "2020-01")
            await page.fill("#to", "2020-12")
            await page.click("#range button[type=submit]")
            await page.wait_for_selector("#by-hospital:has-text('暂无数据')")
            assert errors == []
        finally:
            await browser.close()


async def test_chinese_renders_as_text_not_boxes() -> None:
    """The pages are Chinese first: the browser must have a CJK font (make install-browser
    installs fonts-noto-cjk), or screenshots show boxes. Characters no font has (a private
    use plane) render as the same missing-glyph box; Chinese must not look like them."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page()
        await page.set_content(
            '<span id="zh" style="font-size:40px">互认检查结果</span><br>'
            '<span id="box" style="font-size:40px">\U000f0000\U000f0001\U000f0002'
            "\U000f0003\U000f0004\U000f0005</span>"
        )
        zh = await page.eval_on_selector("#zh", "e => e.getBoundingClientRect().width")
        box = await page.eval_on_selector("#box", "e => e.getBoundingClientRect().width")
        await browser.close()
    assert abs(zh - box) > 1, f"Chinese is as wide as missing glyphs ({zh} vs {box})"
