"""Signing in to the web pages through an OpenID Connect issuer: authorization code with
PKCE against a stand-in provider on a real HTTP server (tests/oidc_provider.py). The
browser is an httpx client with a cookie jar; mrb's token exchange and JWKS reads go over
HTTP to the provider. A mapped, enabled person gets the same server-side session as a
local login; every way the answer can be forged, replayed or refused is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.services import users as user_service
from broker.services.web_login import oidc_account_name
from broker.settings import Settings
from broker.storage.tables import audit_event
from broker.storage.web_tables import web_account, web_session
from tests.conftest import Db, free_port
from tests.oidc_provider import Provider, s256

CLIENT_ID = "mrb-web"
CLIENT_SECRET = "s3cret-of-the-client"
BASE = "https://mrb.test"
CALLBACK = f"{BASE}/auth/oidc/callback"
SESSION = "__Host-mrb_session"
FLOW = "__Host-mrb_oidc"
SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider(CLIENT_ID, CLIENT_SECRET)
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
        public_base_url=BASE,
        oidc_issuer=provider.issuer,
        oidc_audience="mrb-api",  # the API's audience; the ID token names the client
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SecretStr(CLIENT_SECRET),
    )


@pytest.fixture
async def browser(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def map_user(c: Container, provider: Provider, role: Role = Role.DOCTOR) -> None:
    await user_service.map_user(
        c.access_uow(),
        SECURITY,
        issuer=provider.issuer,
        subject=provider.subject,
        role=role,
        hospital=None if role.platform else "H002",
        display_name="王医生",
    )


async def to_issuer(browser: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """Start: mrb sends the browser to the issuer; the issuer approves and sends it back.
    The redirect URL back to mrb, and the authorization request's parameters."""
    start = await browser.get("/auth/oidc/start")
    assert start.status_code == 303, start.text
    location = start.headers["location"]
    asked = Provider.query_of(location)
    async with httpx.AsyncClient(trust_env=False) as http:  # the browser, at the issuer
        approved = await http.get(location)
    assert approved.status_code == 302, approved.text
    return approved.headers["location"], asked


async def sign_in(browser: httpx.AsyncClient) -> httpx.Response:
    back, _ = await to_issuer(browser)
    return await browser.get(back)


async def actions(c: Container) -> list[tuple[str, dict[str, object]]]:
    async with c.sessions() as s:
        rows = await s.execute(
            select(audit_event.c.action, audit_event.c.detail)
            .where(audit_event.c.action.like("web.%"))
            .order_by(audit_event.c.id)
        )
        return [(r[0], r[1]) for r in rows]


def refused(answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert words in answer.text, answer.text
    assert "Cache-Control" in answer.headers and "no-store" in answer.headers["cache-control"]
    assert SESSION not in answer.headers.get("set-cookie", "")


async def test_a_mapped_person_signs_in_and_the_session_works_with_csrf(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    methods = (await browser.get("/auth/methods")).json()
    assert methods == {
        "password": True,
        "oidc_issuer": provider.issuer,
        "oidc_start": "/auth/oidc/start",
    }

    start = await browser.get("/auth/oidc/start")
    assert start.status_code == 303
    flow_cookie = start.headers["set-cookie"]
    for part in (f"{FLOW}=", "HttpOnly", "Secure", "SameSite=lax", "Path=/", "Max-Age=600"):
        assert part in flow_cookie, flow_cookie
    asked = Provider.query_of(start.headers["location"])
    assert start.headers["location"].startswith(provider.issuer + "/auth?")
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["redirect_uri"] == CALLBACK and asked["client_id"] == CLIENT_ID
    assert asked["scope"] == "openid profile" and asked["state"] and asked["nonce"]
    # The verifier, state and nonce are nowhere but in the (signed) cookie.
    async with httpx.AsyncClient(trust_env=False) as http:
        back = (await http.get(start.headers["location"])).headers["location"]
    answer = await browser.get(back)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/doctor"
    cookies = answer.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith(f"{SESSION}="))
    for part in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert part in session_cookie
    assert any(c.startswith(f'{FLOW}=""') or "Max-Age=0" in c for c in cookies if FLOW in c)
    assert FLOW not in browser.cookies  # spent
    # The token request carried the PKCE verifier matching the challenge (the provider
    # checked it too) and the client's secret.
    (request,) = provider.token_requests
    assert s256(request["code_verifier"]) == asked["code_challenge"]
    assert request["redirect_uri"] == CALLBACK

    info = (await browser.get("/auth/session")).json()
    assert (info["username"], info["role"], info["hospital"]) == ("u-wang", "doctor", "H002")
    assert info["display_name"] == "王医生"
    csrf = info["csrf_token"]
    assert (await browser.get("/api/v1/notifications")).status_code == 200
    missing = await browser.post("/api/v1/notifications/n-1/read")
    assert missing.status_code == 403 and "CSRF" in missing.json()["title"]
    right = await browser.post("/api/v1/notifications/n-1/read", headers={"X-CSRF-Token": csrf})
    assert right.status_code == 404  # past authentication and CSRF: no such notice
    # Roles and hospital scope as with the API's tokens.
    other = await browser.get("/api/v1/savings", params={"hospital": "H001"})
    assert other.status_code == 403

    # One session store: the session is a web_session row of the person's web account,
    # which no password can open.
    async with container.sessions() as s:
        (username,) = (await s.execute(select(web_session.c.username))).scalars()
        stored = (
            await s.execute(select(web_account).where(web_account.c.username == username))
        ).one()
    assert username == oidc_account_name(provider.issuer, "u-wang")
    assert stored.password_hash == "!oidc:u-wang"
    local = await browser.post("/auth/login", json={"username": username, "password": "x" * 12})
    assert local.status_code == 401
    # That row is not a local account: `mrb user list` and the admin page do not show it.
    security = Actor("sec.zhou", Role.SECURITY_ADMIN, ALL_HOSPITALS)
    listed = await user_service.listed_accounts(container.web_uow(), security)
    assert username not in [a.username for a in listed]

    out = await browser.post("/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert (await browser.get("/auth/session")).status_code == 401
    logged = await actions(container)
    assert [a for a, _ in logged] == ["web.login", "web.logout"]
    assert logged[0][1]["method"] == "oidc" and logged[0][1]["subject"] == "u-wang"


async def test_disabling_or_remapping_the_person_takes_effect_on_the_next_request(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    assert (await sign_in(browser)).status_code == 303
    await map_user(container, provider, Role.PLATFORM_FINANCE)
    info = (await browser.get("/auth/session")).json()
    assert (info["role"], info["hospital"]) == ("platform-finance", None)
    await user_service.disable(
        container.access_uow(),
        SECURITY,
        issuer=provider.issuer,
        subject=provider.subject,
        reason="left",
    )
    ended = await browser.get("/auth/session")
    assert ended.status_code == 401 and "disabled" in ended.json()["detail"]


async def test_a_wrong_state_is_refused(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    back, asked = await to_issuer(browser)
    forged = back.replace(f"state={asked['state']}", "state=not-the-one")
    assert forged != back
    refused(await browser.get(forged), 400, "does not belong to the sign-in")
    assert provider.token_requests == []  # the code was never even tried
    # Without the flow cookie (another browser): refused as well.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)), base_url=BASE
    ) as stranger:
        refused(await stranger.get(back), 400, "No sign-in in progress")
    assert await actions(container) == []


async def test_a_replayed_code_is_refused(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    start = await browser.get("/auth/oidc/start")
    flow = browser.cookies[FLOW]
    async with httpx.AsyncClient(trust_env=False) as http:
        back = (await http.get(start.headers["location"])).headers["location"]
    assert (await browser.get(back)).status_code == 303
    # Again in the same browser: the flow cookie is spent.
    refused(await browser.get(back), 400, "No sign-in in progress")
    # Again with the flow cookie put back (someone who copied both): the issuer has
    # spent the code.
    browser.cookies.set(FLOW, flow, domain="mrb.test", path="/")
    refused(await browser.get(back), 400, "invalid_grant")
    assert len(provider.token_requests) == 2


async def test_an_id_token_with_another_nonce_is_refused(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    provider.nonce_override = "someone-elses-nonce"
    refused(await sign_in(browser), 400, "nonce")
    assert (await browser.get("/auth/session")).status_code == 401


async def test_a_code_of_another_pkce_challenge_is_refused(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    """Code injection: a code the attacker got for their own challenge, pasted into the
    victim's callback with the victim's state, fails the issuer's PKCE check."""
    await map_user(container, provider)
    start = await browser.get("/auth/oidc/start")
    asked = Provider.query_of(start.headers["location"])
    stolen = provider.authorize_for(s256("the-attackers-verifier-" + "x" * 30), CALLBACK)
    answer = await browser.get(
        "/auth/oidc/callback", params={"code": stolen, "state": asked["state"]}
    )
    refused(answer, 400, "invalid_grant")
    (request,) = provider.token_requests
    assert s256(request["code_verifier"]) == asked["code_challenge"]


async def test_an_unmapped_person_is_refused_with_a_clear_page(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    answer = await sign_in(browser)
    refused(answer, 403, "User not mapped")
    assert "mrb user map" in answer.text and "u-wang" in answer.text
    assert (await browser.get("/auth/session")).status_code == 401


async def test_a_disabled_person_is_refused_and_audited(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    await user_service.disable(
        container.access_uow(),
        SECURITY,
        issuer=provider.issuer,
        subject=provider.subject,
        reason="left",
    )
    refused(await sign_in(browser), 403, "User disabled")
    ((action, detail),) = await actions(container)
    assert action == "web.login.refused"
    assert detail["reason"] == "disabled" and detail["method"] == "oidc"


async def test_the_issuers_refusal_is_a_clear_page(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    provider.deny = True
    answer = await sign_in(browser)
    refused(answer, 403, "access_denied")
    assert "The user declined" in answer.text
    assert provider.token_requests == []


async def test_a_tampered_flow_cookie_is_refused(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    await map_user(container, provider)
    back, _ = await to_issuer(browser)
    flow = browser.cookies[FLOW]
    payload, _, mac = flow.partition(".")
    browser.cookies.set(FLOW, payload + "." + mac[::-1], domain="mrb.test", path="/")
    refused(await browser.get(back), 400, "not valid")


async def test_a_public_client_signs_in_with_pkce_alone(
    settings: Settings, provider: Provider
) -> None:
    provider.client_secret = None
    public = settings.model_copy(update={"oidc_client_secret": None})
    c = Container.build(public)
    try:
        from tests.conftest import seed_hospitals

        await seed_hospitals(c, "H002")
        await map_user(c, provider)
        transport = httpx.ASGITransport(app=create_app(c))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            answer = await sign_in(http)
            assert answer.status_code == 303, answer.text
            assert (await http.get("/auth/session")).json()["username"] == "u-wang"
        (request,) = provider.token_requests
        assert request["client_id"] == CLIENT_ID and request["code_verifier"]
    finally:
        await c.close()


def test_settings_refuse_a_client_without_issuer_and_scopes_without_openid() -> None:
    with pytest.raises(ValueError, match="need MRB_OIDC_ISSUER"):
        Settings(oidc_client_id="mrb-web")
    with pytest.raises(ValueError, match="openid"):
        Settings(
            oidc_issuer="https://idp.test/r",
            oidc_audience="a",
            oidc_client_id="c",
            oidc_scopes="profile",
        )
    plain = Settings(
        oidc_issuer="https://idp.test/r",
        oidc_audience="a",
        oidc_client_id="c",
        public_base_url="https://mrb.example/",
    )
    assert plain.oidc_login is not None
    assert plain.oidc_login.redirect_uri == "https://mrb.example/auth/oidc/callback"
    assert Settings(oidc_issuer="https://idp.test/r", oidc_audience="a").oidc_login is None


async def test_a_password_set_on_the_persons_web_account_closes_it_to_the_issuer(
    container: Container, browser: httpx.AsyncClient, provider: Provider
) -> None:
    """`mrb user reset` on an issuer's person's web account would detach it from
    oidc_user: its sessions end, and signing in through the issuer is refused."""
    await map_user(container, provider)
    assert (await sign_in(browser)).status_code == 303
    await user_service.reset_password(
        container.web_uow(),
        SECURITY,
        username=oidc_account_name(provider.issuer, provider.subject),
        password="a long new password",
    )
    assert (await browser.get("/auth/session")).status_code == 401
    refused(await sign_in(browser), 403, "unusable")
    assert [a for a, _ in await actions(container)][-1] == "web.login.refused"
