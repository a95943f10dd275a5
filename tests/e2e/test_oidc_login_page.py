"""Signing in with the OpenID Connect issuer in headless Chromium: the login page offers
"Sign in with <issuer>", the browser goes to the stand-in provider (tests/oidc_provider.py,
real HTTP) and back, and lands on the role's page signed in; an unmapped person sees a
page that says why. No secret of the flow (verifier, session id) ever enters a URL."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.runtime import Stack, running_stack
from broker.services import users as user_service
from broker.settings import Settings
from tests.conftest import Db, free_port, seed_hospitals
from tests.e2e.accessibility import assert_accessible
from tests.e2e.conftest import CHROMIUM
from tests.oidc_provider import Provider

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider("mrb-web")  # a public client: PKCE alone
    yield p
    p.close()


@pytest.fixture
def settings(db: Db, tmp_path: Path, provider: Provider) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db.url,
        database_schema=db.schema,
        http_port=free_port(),
        metrics_port=free_port(),
        embedded_kafka_port=free_port(),
        create_keys=True,
        oidc_issuer=provider.issuer,
        oidc_audience="mrb-api",
        oidc_client_id="mrb-web",
    )


@pytest_asyncio.fixture(loop_scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        await seed_hospitals(s.container, "H001", "H002")
        yield s


@SQLITE
async def test_sign_in_with_the_issuer_lands_on_the_roles_page(
    stack: Stack, provider: Provider, browser: Any
) -> None:
    await user_service.map_user(
        stack.container.access_uow(),
        SECURITY,
        issuer=provider.issuer,
        subject=provider.subject,
        role=Role.FINANCE,
        hospital="H002",
        display_name="王会计",
    )
    page = await browser.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{stack.api_url}/login")
    link = await page.wait_for_selector("#oidc:not([hidden]) a")
    assert link is not None
    host = urlsplit(provider.issuer).netloc
    assert f"Sign in with {host}" in " ".join((await link.inner_text()).split())
    await assert_accessible(page)  # the login page with the issuer's button
    await link.click()
    await page.wait_for_url(f"{stack.api_url}/finance")
    await page.wait_for_selector("#app:not([hidden])")
    assert "王会计" in await page.inner_text("#who")
    # The issuer was visited with a PKCE challenge; the verifier and the session
    # id went nowhere near a URL.
    assert any(u.startswith(provider.issuer + "/auth?") for u in urls)
    (request,) = provider.token_requests
    cookies = {c["name"]: c for c in await page.context.cookies(stack.api_url)}
    session = cookies["__Host-mrb_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "__Host-mrb_oidc" not in cookies  # spent at the callback
    for url in urls:
        assert request["code_verifier"] not in url and session["value"] not in url
    # The session works for the API, CSRF header and all.
    status = await page.evaluate(
        """async () => (await fetch("/api/v1/notifications/n-1/read", {
            method: "POST", headers: { "X-CSRF-Token": session.csrf },
            credentials: "same-origin" })).status"""
    )
    assert status in (403, 404)  # past CSRF: finance reads no doctor's notices
    info = await page.evaluate("fetch('/auth/session').then((r) => r.json())")
    assert (info["username"], info["role"], info["hospital"]) == (
        "u-wang",
        "finance",
        "H002",
    )
    assert errors == []

    # Someone the issuer knows but mrb does not: a page that says why.
    other = await browser.new_page()
    provider.subject = "u-stranger"
    await other.goto(f"{stack.api_url}/login")
    other_link = await other.wait_for_selector("#oidc:not([hidden]) a")
    assert other_link is not None
    await other_link.click()
    await other.wait_for_selector("#refused")
    assert "User not mapped" in await other.inner_text("#refused")
    assert "u-stranger" in await other.inner_text("main")
    await assert_accessible(other)  # the page that says why
