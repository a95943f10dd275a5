"""Web login on SQLite and PostgreSQL, through the HTTP app: local accounts, sessions
stored hashed, the cookie's attributes, CSRF, lockout, idle and absolute expiry, logout,
disabling and resetting, and roles and hospital scope exactly as with an API token."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.cli.main import app as cli
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.services import users as user_service
from broker.settings import Settings
from broker.storage.tables import audit_event
from broker.storage.web_tables import web_account, web_session
from tests.conftest import bearer

SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
PASSWORD = "correct horse battery"
COOKIE = "__Host-mrb_session"
SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


async def add(c: Container, username: str, role: Role, hospital: str | None) -> None:
    await user_service.add_account(
        c.web_uow(), SECURITY, username=username, password=PASSWORD, role=role, hospital=hospital
    )


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    await add(container, "dr.li", Role.DOCTOR, "H002")
    await add(container, "fin.zhao", Role.FINANCE, "H002")
    app = create_app(container)
    # https: the client's cookie jar sends a Secure cookie only there, as browsers do.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://mrb.test") as http:
        yield http


async def login(http: httpx.AsyncClient, username: str = "dr.li", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return await http.post("/auth/login", json={"username": username, "password": password})


async def actions(c: Container) -> list[str]:
    async with c.sessions() as s:
        rows = await s.execute(
            select(audit_event.c.action)
            .where(audit_event.c.action.like("web.%"))
            .order_by(audit_event.c.id)
        )
        return [r[0] for r in rows]


async def test_login_sets_a_host_cookie_and_stores_only_its_hash(
    client: httpx.AsyncClient, container: Container
) -> None:
    answer = await login(client, " Dr.Li ")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["username"], body["role"], body["hospital"]) == ("dr.li", "doctor", "H002")
    cookie = answer.headers["set-cookie"]
    for part in (f"{COOKIE}=", "HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert part in cookie, cookie
    assert "Max-Age" not in cookie and "Domain" not in cookie
    session_id = client.cookies[COOKIE]
    assert session_id not in answer.text  # only in the cookie
    async with container.sessions() as s:
        (stored,) = (await s.execute(select(web_session.c.id_hash))).scalars()
        (password_hash,) = (await s.execute(select(web_account.c.password_hash).where(
            web_account.c.username == "dr.li"))).scalars()  # fmt: skip
    assert stored == hashlib.sha256(session_id.encode()).hexdigest()
    assert password_hash.startswith("$argon2id$")
    assert (await client.get("/api/v1/notifications")).status_code == 200
    again = (await client.get("/auth/session")).json()
    assert again["csrf_token"] == body["csrf_token"]
    assert await actions(container) == ["web.login"]


async def test_unsafe_methods_need_the_csrf_header_bearer_calls_do_not(
    client: httpx.AsyncClient, container: Container
) -> None:
    csrf = (await login(client)).json()["csrf_token"]
    missing = await client.post("/api/v1/notifications/n-1/read")
    assert missing.status_code == 403
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "CSRF token missing or wrong"
    wrong = await client.post("/api/v1/notifications/n-1/read", headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    right = await client.post("/api/v1/notifications/n-1/read", headers={"X-CSRF-Token": csrf})
    assert right.status_code == 404  # past the CSRF check: no such notice
    # A bearer token needs no CSRF token (a browser never sends one on its own), and wins
    # over the cookie.
    token = await bearer(container, "doctor", "H002", "dr-token")
    with_token = await client.post("/api/v1/notifications/n-1/read", headers=token)
    assert with_token.status_code == 404
    # Logout is a change too.
    assert (await client.post("/auth/logout")).status_code == 403
    out = await client.post("/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204 and COOKIE in out.headers["set-cookie"]
    async with container.sessions() as s:
        assert (await s.execute(select(web_session))).first() is None
    assert (await client.get("/api/v1/notifications")).status_code == 401
    assert await actions(container) == ["web.login", "web.logout"]


async def test_form_logins_work_and_cross_site_ones_are_refused(
    client: httpx.AsyncClient,
) -> None:
    form = {"username": "dr.li", "password": PASSWORD}
    assert (await client.post("/auth/login", data=form)).status_code == 200
    evil = await client.post("/auth/login", data=form, headers={"Origin": "https://evil.test"})
    assert evil.status_code == 403
    same = await client.post("/auth/login", data=form, headers={"Origin": "https://mrb.test"})
    assert same.status_code == 200
    assert (await client.post("/auth/login", content=b"\xff")).status_code == 422


async def test_unknown_and_wrong_answer_alike_and_five_failures_lock(
    client: httpx.AsyncClient, container: Container
) -> None:
    unknown = await login(client, "nobody")
    wrong = await login(client, "dr.li", "wrong password!!")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    for _ in range(4):
        assert (await login(client, "dr.li", "wrong password!!")).status_code == 401
    locked = await login(client)  # the right password, but locked
    assert locked.status_code == 401 and locked.json() == wrong.json()
    assert await actions(container) == [
        *["web.login.failure"] * 5,
        "web.login.lockout",
        "web.login.refused",
    ]
    async with container.sessions() as s, s.begin():
        (until,) = (await s.execute(select(web_account.c.locked_until).where(
            web_account.c.username == "dr.li"))).scalars()  # fmt: skip
        assert until > datetime.now(UTC) + timedelta(minutes=14)
        await s.execute(update(web_account).values(locked_until=datetime.now(UTC)))
    assert (await login(client)).status_code == 200  # the lock has passed
    async with container.sessions() as s:
        row = (await s.execute(select(web_account).where(web_account.c.username == "dr.li"))).one()
    assert (row.failed_count, row.locked_until) == (0, None)


async def _age(container: Container, **values: datetime) -> None:
    async with container.sessions() as s, s.begin():
        await s.execute(update(web_session).values(**values))


async def test_idle_and_absolute_timeouts_end_the_session(
    client: httpx.AsyncClient, container: Container
) -> None:
    now = datetime.now(UTC)
    await login(client)
    await _age(container, last_seen_at=now - timedelta(minutes=29))
    assert (await client.get("/api/v1/notifications")).status_code == 200  # and touched
    async with container.sessions() as s:
        (seen,) = (await s.execute(select(web_session.c.last_seen_at))).scalars()
    assert seen >= now
    await _age(container, last_seen_at=now - timedelta(minutes=31))
    idle = await client.get("/api/v1/notifications")
    assert idle.status_code == 401 and "expired" in idle.json()["detail"]
    async with container.sessions() as s:
        assert (await s.execute(select(web_session))).first() is None
    await login(client)
    await _age(container, created_at=now - timedelta(hours=12, seconds=1), last_seen_at=now)
    assert (await client.get("/api/v1/notifications")).status_code == 401


async def test_disabling_or_resetting_ends_sessions_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    await login(client)
    assert await user_service.disable_account(
        container.web_uow(), SECURITY, username="dr.li", reason="left"
    )
    assert (await client.get("/api/v1/notifications")).status_code == 401
    assert (await login(client)).status_code == 401
    await user_service.reset_password(
        container.web_uow(), SECURITY, username="dr.li", password="a new long password", enable=True
    )
    assert (await login(client)).status_code == 401  # the old password
    assert (await login(client, password="a new long password")).status_code == 200
    await user_service.reset_password(
        container.web_uow(), SECURITY, username="dr.li", password="a third long password"
    )
    assert (await client.get("/api/v1/notifications")).status_code == 401


async def test_roles_and_hospital_scope_are_the_api_s(
    client: httpx.AsyncClient, container: Container
) -> None:
    cases = [
        ("dr.li", "doctor", "/api/v1/savings"),  # a doctor has no SAVINGS duty
        ("fin.zhao", "finance", "/api/v1/savings?hospital=H001"),  # another hospital's
        ("fin.zhao", "finance", "/api/v1/savings?hospital=H002"),
        ("fin.zhao", "finance", "/api/v1/notifications"),
    ]
    for username, role, path in cases:
        client.cookies.clear()
        await login(client, username)
        by_session = await client.get(path)
        client.cookies.clear()
        by_token = await client.get(path, headers=await bearer(container, role, "H002", username))
        assert by_session.status_code == by_token.status_code, path
        if by_token.status_code == 403:
            assert by_session.json()["detail"] == by_token.json()["detail"]
    assert [c[2] for c in cases if False] == []


async def test_account_rules(container: Container) -> None:
    doctor = Actor("it.qian", Role.ADMIN, "H002")
    with pytest.raises(ValueError, match="hospital role"):
        await add(container, "dr.wang", Role.DOCTOR, None)
    with pytest.raises(ValueError, match="at least 12"):
        await user_service.add_account(
            container.web_uow(), SECURITY, username="dr.wang", password="short",
            role=Role.DOCTOR, hospital="H002",
        )  # fmt: skip
    with pytest.raises(ValueError, match="not registered"):
        await add(container, "dr.wang", Role.DOCTOR, "H999")
    with pytest.raises(ValueError, match="machine"):
        await add(container, "adapter.x", Role.ADAPTER, "H002")
    await add(container, "qc.liu", Role.QC, None)
    with pytest.raises(ValueError, match="exists"):
        await add(container, "QC.Liu", Role.QC, None)
    with pytest.raises(Exception, match="needs the role"):
        await user_service.add_account(
            container.web_uow(), doctor, username="x.y", password=PASSWORD,
            role=Role.DOCTOR, hospital="H002",
        )  # fmt: skip
    # A hospital admin manages their own hospital's accounts only.
    with pytest.raises(Exception, match="acts for H002 only"):
        await user_service.disable_account(
            container.web_uow(), doctor, username="qc.liu", reason="x"
        )
    async with container.sessions() as s:
        details = [r[0] for r in await s.execute(
            select(audit_event.c.detail).where(audit_event.c.action == "user.add"))]  # fmt: skip
    assert details and all(PASSWORD not in str(d) and "argon2" not in str(d) for d in details)


@SQLITE
def test_user_commands_add_reset_and_disable_local_accounts(settings: Settings) -> None:
    runner = CliRunner()
    env = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": settings.database_url or "",
        "MRB_CREATE_KEYS": "true",
        "COLUMNS": "250",
    }
    assert runner.invoke(cli, ["keys", "init"], env=env).exit_code == 0
    base = ["--by", "sec.chen"]
    added = runner.invoke(
        cli, ["user", "add", "--username", "qc.liu", "--role", "qc", "--generate", *base], env=env
    )
    assert added.exit_code == 0, added.output
    assert "added qc.liu: qc, *" in added.output and "password (shown once): " in added.output
    typed = runner.invoke(
        cli,
        ["user", "add", "--username", "sec.wu", "--role", "security-admin", *base],
        input="too short\ntoo short\n",
        env=env,
    )
    assert typed.exit_code != 0 and "at least 12" in typed.output
    listed = runner.invoke(cli, ["user", "list", *base], env=env)
    assert listed.exit_code == 0 and "qc.liu" in listed.output
    both = runner.invoke(
        cli, ["user", "disable", "--username", "qc.liu", "--subject", "s", "--reason", "x"], env=env
    )
    assert both.exit_code != 0
    disabled = runner.invoke(
        cli, ["user", "disable", "--username", "qc.liu", "--reason", "left", *base], env=env
    )
    assert disabled.exit_code == 0 and "disabled the local account qc.liu" in disabled.output
    reset = runner.invoke(
        cli,
        ["user", "reset", "--username", "qc.liu", "--enable", *base],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env=env,
    )
    assert reset.exit_code == 0, reset.output
    assert "(enabled)" in reset.output and PASSWORD not in reset.output
    unknown = runner.invoke(cli, ["user", "reset", "--username", "nobody", "--generate"], env=env)
    assert unknown.exit_code == 2 and "no local account" in unknown.output
