"""The web pages in headless Chromium: signing in (login, wrong password, lockout, CSRF,
idle and absolute expiry, logout, a disabled user, roles and hospital scope as the API's,
no secret in any URL), the doctor's page (check, recognise, a safety notice arrives) and
finance's (savings as charts).

The session cookie is `__Host-mrb_session` with Secure: Chromium stores and sends it on
http://127.0.0.1, which it treats as a secure context (checked below); other addresses
over plain HTTP need MRB_WEB_COOKIE_SECURE=false."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, update

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.runtime import Stack, running_stack
from broker.services import users as user_service
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import audit_event
from broker.storage.web_tables import web_session
from tests import factories as f
from tests.conftest import bearer, certify, seed_hospitals
from tests.e2e.accessibility import assert_accessible
from tests.e2e.conftest import CHROMIUM

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        await seed_hospitals(s.container, "H001", hospitals.Hospital("H002", "H002", "510502", "2"))
        await certify(s.container, valid_to=date(2030, 12, 31))
        yield s


SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
PASSWORD = "correct horse battery"
COOKIE = "__Host-mrb_session"


async def account(stack: Stack, username: str, role: Role, hospital: str | None) -> None:
    await user_service.add_account(
        stack.container.web_uow(),
        SECURITY,
        username=username,
        password=PASSWORD,
        role=role,
        hospital=hospital,
    )


class Visited:
    """Every URL the page requests or shows, to prove no secret ever enters one."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("framenavigated", lambda f: self.urls.append(f.url))

    def assert_clean(self, *secrets: str) -> None:
        assert self.urls
        for url in self.urls:
            assert "token" not in url.lower() and "#" not in url, url
            for secret in secrets:
                assert secret not in url, url


async def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    await page.wait_for_selector("#login:not([hidden])")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")


async def signed_in(page: Any, stack: Stack, path: str, username: str) -> None:
    await page.goto(f"{stack.api_url}{path}")
    await sign_in(page, username)
    await page.wait_for_selector("#app:not([hidden])")
    assert username in await page.inner_text("#who")


async def in_page(page: Any, method: str, path: str, csrf: bool) -> dict[str, Any]:
    """A fetch from the page itself (the cookie goes along), with or without the CSRF
    header the pages send."""
    result: dict[str, Any] = await page.evaluate(
        """async ([method, path, csrf]) => {
            const headers = csrf ? { "X-CSRF-Token": session.csrf } : {};
            const r = await fetch(path, { method, headers, credentials: "same-origin" });
            return { status: r.status, type: r.headers.get("content-type"),
                     body: await r.text() };
        }""",
        [method, path, csrf],
    )
    return result


async def index(stack: Stack, value: bytes) -> None:
    (p,) = await stack.container.ingest_service().process_batch([f.inbound(value, "H001")])
    assert p.outcome.value == "indexed", p.detail


async def test_recognise_in_the_page_then_see_the_withdrawal_notice(
    stack: Stack, browser: Any
) -> None:
    today = date.today().isoformat()
    await index(stack, f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None))
    await account(stack, "dr-li", Role.DOCTOR, "H002")
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await signed_in(page, stack, "/doctor", "dr-li")
    assert await page.inner_text("#unread") == "0"
    (cookie,) = await page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["secure"]) == (COOKIE, True, True)
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    csrf = await page.evaluate("session.csrf")

    await page.fill("#patient", f.PATIENT_A)
    for n, code in enumerate(("718-7", "4548-4"), 1):  # Enter picks the best match
        await page.fill("#item-search", code)
        await page.press("#item-search", "Enter")
        await page.wait_for_selector(f"#picked li.picked-item:nth-child({n})")
    await page.click("#check-form button[type=submit]")
    await page.wait_for_selector("#answer:not([hidden])")
    rows = await page.locator("#answer tbody tr").all()
    decisions = [await r.get_attribute("data-decision") for r in rows]
    assert decisions == ["RECOGNIZABLE", "NO_PRIOR_RESULT"]
    assert (await page.inner_text("td.decision")).startswith("可互认")
    await page.wait_for_selector("tr.timeline-row")  # via /fhir, audited
    (row,) = await page.locator("tr.timeline-row").all_inner_texts()
    assert "H001" in row and "报告" in row and "final" in row
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
    visited.assert_clean(cookie["value"], csrf, PASSWORD, f.PATIENT_A)


async def test_the_finance_page_charts_the_ledger(stack: Stack, browser: Any) -> None:
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
    await account(stack, "finance-zhao", Role.PLATFORM_FINANCE, None)
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{stack.api_url}/login")
    await sign_in(page, "finance-zhao")  # the login page sends finance on
    await page.wait_for_url(f"{stack.api_url}/finance")
    await page.wait_for_selector("#by-hospital rect.bar")
    assert "全平台" in await page.inner_text("#who")
    bars = page.locator("#by-hospital rect.bar")
    assert await bars.count() == 1
    assert await bars.first.get_attribute("data-key") == "H002"
    assert "¥5.40" in await page.inner_text("#by-hospital")
    assert "血红蛋白" in await page.inner_text("#by-item")
    assert "手术、输血等重大诊疗前需复查" in await page.inner_text("#by-reason")
    totals = await page.inner_text("#totals")
    assert "1 次互认" in totals and "净 net ¥5.40" in totals
    await page.fill("#from", "2020-01")
    await page.fill("#to", "2020-12")
    await page.click("#range button[type=submit]")
    await page.wait_for_selector("#by-hospital:has-text('暂无数据')")
    assert errors == []
    visited.assert_clean(PASSWORD)


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


async def _actions(stack: Stack) -> list[str]:
    async with stack.container.sessions() as s:
        rows = await s.execute(
            select(audit_event.c.action)
            .where(audit_event.c.action.like("web.%"))
            .order_by(audit_event.c.id)
        )
        return [r[0] for r in rows]


async def test_wrong_password_lockout_csrf_and_logout_in_the_browser(
    stack: Stack, browser: Any
) -> None:
    await account(stack, "dr-wang", Role.DOCTOR, "H002")
    page = await browser.new_page()
    visited = Visited(page)
    await page.goto(f"{stack.api_url}/doctor")
    await sign_in(page, "dr-wang", "not the password")
    await page.wait_for_selector("#login-error:has-text('用户名或密码错误')")
    assert await page.is_hidden("#app")
    await assert_accessible(page)  # the sign-in form, with its error
    await sign_in(page, "dr-wang")
    await page.wait_for_selector("#app:not([hidden])")
    csrf = await page.evaluate("session.csrf")

    # Reads need no CSRF token; a change without it gets a 403 problem body.
    assert (await in_page(page, "GET", "/api/v1/notifications", False))["status"] == 200
    missing = await in_page(page, "POST", "/api/v1/notifications/n-1/read", False)
    assert missing["status"] == 403
    assert missing["type"] == "application/problem+json"
    assert "CSRF token missing or wrong" in missing["body"]
    sent = await in_page(page, "POST", "/api/v1/notifications/n-1/read", True)
    assert sent["status"] == 404  # past the CSRF check: no such notice

    # Logout ends the session on the server, not only in the page.
    (cookie,) = await page.context.cookies()
    await page.click("#logout")
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.context.cookies() == []
    async with stack.container.sessions() as s:
        assert (await s.execute(select(web_session))).first() is None
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        stale = await http.get(
            "/api/v1/notifications", headers={"Cookie": f"{COOKIE}={cookie['value']}"}
        )
    assert stale.status_code == 401

    # Five failures lock the account: then even the right password is refused
    # (the failure before the login above no longer counts).
    for _ in range(5):
        await sign_in(page, "dr-wang", "not the password")
        await page.wait_for_selector("#login-error:has-text('锁定')")
        await page.evaluate("document.getElementById('login-error').textContent = ''")
    await sign_in(page, "dr-wang")
    await page.wait_for_selector("#login-error:has-text('锁定')")
    assert await page.is_hidden("#app")
    visited.assert_clean(cookie["value"], csrf, PASSWORD)
    assert await _actions(stack) == [
        "web.login.failure",
        "web.login",
        "web.logout",
        *["web.login.failure"] * 5,
        "web.login.lockout",
        "web.login.refused",
    ]


async def test_expired_and_disabled_sessions_ask_to_sign_in_again(
    stack: Stack, browser: Any
) -> None:
    await account(stack, "dr-zhou", Role.DOCTOR, "H002")
    c = stack.container

    async def age(**values: datetime) -> None:
        async with c.sessions() as s, s.begin():
            await s.execute(update(web_session).values(**values))

    page = await browser.new_page()
    now = datetime.now(UTC)
    await signed_in(page, stack, "/doctor", "dr-zhou")
    await page.wait_for_selector("#notice-list li")  # the page's first calls are done
    await age(last_seen_at=now - timedelta(minutes=31))  # idle
    await page.click("#refresh")
    await page.wait_for_selector("#login-error:has-text('会话已结束')")

    await sign_in(page, "dr-zhou")
    await page.wait_for_selector("#app:not([hidden])")
    await age(created_at=now - timedelta(hours=12, minutes=1))  # absolute
    await page.reload()
    await page.wait_for_selector("#login:not([hidden])")

    await sign_in(page, "dr-zhou")
    await page.wait_for_selector("#app:not([hidden])")
    assert (await in_page(page, "GET", "/api/v1/notifications", False))["status"] == 200
    await user_service.disable_account(
        c.web_uow(), SECURITY, username="dr-zhou", reason="left the hospital"
    )
    assert (await in_page(page, "GET", "/api/v1/notifications", False))["status"] == 401
    await page.reload()
    await page.wait_for_selector("#login:not([hidden])")
    async with c.sessions() as s:
        assert (await s.execute(select(web_session))).first() is None


async def test_a_session_has_the_role_and_hospital_scope_of_an_api_token(
    stack: Stack, browser: Any
) -> None:
    await account(stack, "fin-qian", Role.FINANCE, "H002")
    await account(stack, "dr-sun", Role.DOCTOR, "H002")
    paths = ["/api/v1/savings", "/api/v1/savings?hospital=H001", "/api/v1/notifications"]
    for username, role in (("fin-qian", "finance"), ("dr-sun", "doctor")):
        context = await browser.new_context()
        page = await context.new_page()
        await signed_in(page, stack, "/login", username)
        token = await bearer(stack.container, role, "H002", username)
        async with httpx.AsyncClient(base_url=stack.api_url, headers=token) as http:
            for path in paths:
                by_session = await in_page(page, "GET", path, False)
                by_token = await http.get(path)
                assert by_session["status"] == by_token.status_code, (username, path)
        await context.close()
