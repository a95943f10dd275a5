"""The admin page's "用户与角色 Users and roles" section in headless Chromium.

A security administrator adds a local account through the page, sees it in the table
(role in Chinese, hospital by name), disables it (the account can no longer sign in),
enables it again with a new password and maps a person of the OpenID Connect issuer;
each change is in the audit trail under their name. A hospital admin of H001 sees their
own hospital's people only, with no form that grants access. Every form control of the
section has an accessible name, and axe-core finds no serious or critical violation."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.runtime import Stack, running_stack
from broker.services import users as user_service
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import audit_event
from tests.conftest import free_port, seed_hospitals
from tests.e2e.accessibility import ADMIN_PAGE, assert_accessible
from tests.e2e.conftest import CHROMIUM
from tests.e2e.screenshots import screenshot

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple battery horse correct"
SECURITY = Actor("sec.tests", Role.SECURITY_ADMIN, ALL_HOSPITALS)
CHENGDU, LUZHOU = "成都市第一人民医院", "泸州市人民医院"
ISSUER = "https://idp.example/realms/city"
ACCOUNTS = {
    "sec-chen": (Role.SECURITY_ADMIN, None),
    "adm-h001": (Role.ADMIN, "H001"),
    "dr-wang": (Role.DOCTOR, "H001"),
    "dr-other": (Role.DOCTOR, "H002"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("users-page")
    settings = Settings(
        data_dir=tmp / "data",
        http_port=free_port(),
        metrics_port=0,
        create_keys=True,
        rate_limit_per_minute=0,
        rate_limit_per_address_per_minute=0,
    )
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        await seed_hospitals(
            s.container,
            hospitals.Hospital("H001", CHENGDU, "510104", "3", grade="甲"),
            hospitals.Hospital("H002", LUZHOU, "510502", "2", grade="甲"),
        )
        for username, (role, home) in ACCOUNTS.items():
            await user_service.add_account(
                s.container.web_uow(),
                SECURITY,
                username=username,
                password=PASSWORD,
                role=role,
                hospital=home,
            )
        yield s


async def _page(browser: Any, stack: Stack, username: str) -> Any:
    """A fresh context signed in as `username` on /admin; page errors are collected."""
    context = await browser.new_context()
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(f"{stack.api_url}/admin")
    await page.wait_for_selector("#login:not([hidden])")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    return page


async def _fetch(page: Any, path: str) -> int:
    status: int = await page.evaluate(
        "async (path) => (await fetch(path, { credentials: 'same-origin' })).status", path
    )
    return status


async def _audited(stack: Stack, actor: str) -> list[tuple[str, dict[str, Any]]]:
    async with stack.container.sessions() as s:
        rows = await s.execute(
            select(audit_event.c.action, audit_event.c.detail)
            .where(audit_event.c.actor == actor)
            .order_by(audit_event.c.id)
        )
        return [(r[0], r[1]) for r in rows]


async def _login(stack: Stack, username: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        r = await anonymous.post("/auth/login", json={"username": username, "password": password})
        return r.status_code


async def _unnamed_controls(page: Any, section: str) -> list[str]:
    """Visible form controls of `section` without an accessible name (a label, an
    aria-label, or a button's text), and table headers without a scope."""
    found: list[str] = await page.evaluate(
        """(section) => {
            const root = document.querySelector(section);
            const visible = (n) => n.offsetParent !== null;
            const bad = [];
            for (const n of root.querySelectorAll("input, select, button")) {
                if (!visible(n)) continue;
                const named = (n.labels && n.labels.length) || n.getAttribute("aria-label")
                    || (n.tagName === "BUTTON" && n.textContent.trim());
                if (!named) bad.push(n.outerHTML.slice(0, 80));
            }
            for (const th of root.querySelectorAll("th")) {
                if (!th.getAttribute("scope")) bad.push(th.outerHTML.slice(0, 80));
            }
            return bad;
        }""",
        section,
    )
    return found


async def test_a_security_admin_adds_disables_and_maps_people(stack: Stack, browser: Any) -> None:
    page = await _page(browser, stack, "sec-chen")
    await page.wait_for_selector("#people tr[data-username='dr-other']")
    assert await page.is_visible("#account-form") and await page.is_visible("#map-form")
    other = await page.inner_text("#people tr[data-username='dr-other']")
    assert "医生 Doctor" in other and LUZHOU in other and "启用 Enabled" in other

    # Add a local account through the page.
    await page.fill("#acct-username", "dr-new")
    await page.fill("#acct-name", "新医生")
    await page.select_option("#acct-role", "doctor")
    await page.select_option("#acct-hospital", "H001")
    await page.fill("#acct-password", PASSWORD)
    await page.fill("#acct-password2", PASSWORD)
    await page.click("#account-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已添加账户 Added dr-new')")
    row = "#people tr[data-username='dr-new']"
    await page.wait_for_selector(row)
    text = await page.inner_text(row)
    assert "新医生" in text and "医生 Doctor" in text and CHENGDU in text
    assert "本地账户" in text and "启用 Enabled" in text
    assert await page.input_value("#acct-password") == ""  # not kept in the form
    assert PASSWORD not in await page.content()
    assert await _login(stack, "dr-new", PASSWORD) == 200

    # Disable it from its row.
    await page.fill(f"{row} input", "离职 left the hospital")
    await page.click(f"{row} .disable-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已停用 Disabled dr-new')")
    await page.wait_for_selector(f"{row} td.state:has-text('已停用')")
    assert await page.locator(f"{row} .disable-form").count() == 0
    assert await _login(stack, "dr-new", PASSWORD) == 401
    await page.check("#people-enabled")  # enabled only: it leaves the table
    await page.wait_for_selector(row, state="detached")
    await page.uncheck("#people-enabled")
    await page.wait_for_selector(row)

    # Enable it again with a new password (from the row's button).
    await page.click(f"{row} button.reset")
    assert await page.input_value("#reset-username") == "dr-new"
    await page.fill("#reset-password", NEW_PASSWORD)
    await page.fill("#reset-password2", NEW_PASSWORD)
    await page.check("#reset-enable")
    await page.click("#reset-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已为 dr-new 设置新密码')")
    await page.wait_for_selector(f"{row} td.state:has-text('启用 Enabled')")
    assert await _login(stack, "dr-new", NEW_PASSWORD) == 200

    # Two passwords that differ never reach the API.
    await page.fill("#reset-username", "dr-new")
    await page.fill("#reset-password", NEW_PASSWORD)
    await page.fill("#reset-password2", PASSWORD)
    await page.click("#reset-form button[type=submit]")
    await page.wait_for_selector("#error:has-text('两次输入的密码不一致')")

    # Map a person of the issuer to a platform role, then see the API's refusal of a
    # platform role with a hospital.
    await page.fill("#map-issuer", ISSUER)
    await page.fill("#map-subject", "u-9f2c")
    await page.fill("#map-name", "李质控")
    await page.select_option("#map-role", "qc")
    await page.select_option("#map-hospital", "")
    await page.click("#map-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已映射 Mapped u-9f2c')")
    mapped = "#people tr[data-subject='u-9f2c']"
    await page.wait_for_selector(mapped)
    text = await page.inner_text(mapped)
    assert "质控 QC" in text and "全平台" in text and ISSUER in text and "统一身份" in text

    assert await _unnamed_controls(page, "#users-section") == []
    await assert_accessible(page, context=ADMIN_PAGE)  # with its users and roles
    users = page.locator("#users-section")
    await screenshot(users, stack.container.settings.data_dir, "admin-users")
    assert page.errors == []
    await page.context.close()

    trail = await _audited(stack, "sec-chen")
    actions = [a for a, _ in trail]
    assert actions == ["web.login", "user.add", "user.disable", "user.reset", "user.map"]
    details = dict(trail)
    assert details["user.add"]["username"] == "dr-new"
    assert details["user.add"]["user_hospital"] == "H001"
    assert details["user.disable"]["reason"] == "离职 left the hospital"
    assert details["user.reset"]["enabled"] is True
    assert details["user.map"]["subject"] == "u-9f2c" and details["user.map"]["role"] == "qc"
    assert all(PASSWORD not in str(d) and NEW_PASSWORD not in str(d) for _, d in trail)


async def test_a_hospital_admin_sees_their_own_people_and_grants_nothing(
    stack: Stack, browser: Any
) -> None:
    page = await _page(browser, stack, "adm-h001")
    await page.wait_for_selector("#people tr[data-username='dr-wang']")
    assert await page.is_visible("#users-section") and await page.is_visible("#reset-form")
    assert await page.is_hidden("#account-form") and await page.is_hidden("#map-form")
    usernames = await page.eval_on_selector_all(
        "#people tr[data-username]", "rows => rows.map((r) => r.dataset.username)"
    )
    assert "dr-other" not in usernames and "sec-chen" not in usernames
    assert {"adm-h001", "dr-wang"} <= set(usernames)
    assert await _fetch(page, "/api/v1/admin/users?hospital=H002") == 403  # the API's guard
    # Granting is not theirs, even through the API with the page's session.
    status = await page.evaluate(
        """async () => (await api("/api/v1/admin/users/accounts", { method: "POST",
            body: JSON.stringify({ username: "x-y", password: "a long password!",
                                   role: "security-admin" }) }).then(() => 201,
            (e) => e.message))"""
    )
    assert "security-admin" in str(status) and "Forbidden" in str(status)
    # Their own doctor's password: reset from the page.
    await page.click("#people tr[data-username='dr-wang'] button.reset")
    await page.fill("#reset-password", NEW_PASSWORD)
    await page.fill("#reset-password2", NEW_PASSWORD)
    await page.click("#reset-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已为 dr-wang 设置新密码')")
    assert await _unnamed_controls(page, "#users-section") == []
    assert page.errors == []
    await page.context.close()
    actions = [a for a, _ in await _audited(stack, "adm-h001")]
    assert "user.reset" in actions and "user.add" not in actions


async def test_a_doctor_sees_no_users_section(stack: Stack, browser: Any) -> None:
    page = await _page(browser, stack, "dr-other")
    await page.wait_for_selector("#no-access:not([hidden])")
    assert await page.is_hidden("#users-section")
    assert await page.locator("#people tbody tr").count() == 0
    assert await _fetch(page, "/api/v1/admin/users") == 403
    assert page.errors == []
    await page.context.close()
