"""The users API (/api/v1/admin/users) over real HTTP and database, SQLite and PostgreSQL.

A security-admin adds, lists, resets, disables and re-enables local accounts and maps and
disables people of the OpenID Connect issuer; a hospital admin of H001 lists, resets and
disables H001's people only, and grants nothing; every change is in the audit trail with
its actor, and no password is ever answered, audited or logged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage.tables import audit_event
from tests.conftest import (
    DB_KINDS,
    Templates,
    api_client,
    migrated_db,
    seed_hospitals,
    settings_for,
)
from tests.logcapture import json_logs

PASSWORD = "a long first password"
NEW_PASSWORD = "a longer second password"
ISSUER = "https://idp.example/realms/city"
PROBLEM = "application/problem+json"
USERS = "/api/v1/admin/users"


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
        await seed_hospitals(stack.container, "H001", "H002")
        yield stack


@pytest.fixture
async def security(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(stack, "security-admin", "*", "sec.chen") as client:
        yield client


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A hospital admin of H001."""
    async with api_client(stack, "admin", "H001", "it.zhou") as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_KINDS)
async def shared_security(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    db_templates: Templates,
) -> AsyncIterator[httpx.AsyncClient]:
    """The security admin's client of one stack per database kind for the whole module,
    for requests that are refused before anything is stored (a stack takes 1-4 s to
    start: once instead of for each of the cases below). A refused request that did
    store the account would fail the next case (409, not 422), so no state leaks."""
    directory = tmp_path_factory.mktemp("users-api")
    async with migrated_db(request.param, directory, db_templates) as made:
        settings = settings_for(made, directory)
        async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
            await seed_hospitals(stack.container, "H001", "H002")
            async with api_client(stack, "security-admin", "*", "sec.chen") as client:
                yield client


def account(username: str, role: str = "doctor", hospital: str | None = "H001") -> dict[str, Any]:
    return {
        "username": username,
        "password": PASSWORD,
        "role": role,
        "hospital": hospital,
        "display_name": f"Name of {username}",
    }


async def audited(stack: Stack, action: str) -> list[Any]:
    async with stack.container.sessions() as s:
        rows = await s.execute(
            select(audit_event).where(audit_event.c.action == action).order_by(audit_event.c.id)
        )
        return list(rows.all())


async def login(stack: Stack, username: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        r = await anonymous.post("/auth/login", json={"username": username, "password": password})
        return r.status_code


def problem(r: httpx.Response, status: int, detail: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status and detail in body["detail"], body
    return body


async def test_a_security_admin_manages_a_local_account(
    stack: Stack, security: httpx.AsyncClient
) -> None:
    with json_logs("DEBUG") as logs:
        added = await security.post(f"{USERS}/accounts", json=account("Dr.Li"))
        assert added.status_code == 201, added.text
        body = added.json()
        assert body["username"] == "dr.li" and body["enabled"] and body["hospital"] == "H001"
        assert body["display_name"] == "Name of Dr.Li" and body["created_by"] == "sec.chen"
        assert "password" not in body and PASSWORD not in added.text
        assert await login(stack, "dr.li", PASSWORD) == 200

        listed = (await security.get(USERS)).json()
        assert [a["username"] for a in listed["accounts"]] == ["dr.li"]
        assert listed["mapped"] == []

        reset = await security.post(
            f"{USERS}/accounts/dr.li/password", json={"password": NEW_PASSWORD}
        )
        assert reset.status_code == 200 and NEW_PASSWORD not in reset.text
        assert reset.json()["failed_logins"] == 0
        assert await login(stack, "dr.li", PASSWORD) == 401
        assert await login(stack, "dr.li", NEW_PASSWORD) == 200

        off = await security.post(f"{USERS}/accounts/dr.li/disable", json={"reason": "left"})
        assert off.json() == {"changed": True}
        again = await security.post(f"{USERS}/accounts/dr.li/disable", json={"reason": "left"})
        assert again.json() == {"changed": False}
        assert await login(stack, "dr.li", NEW_PASSWORD) == 401
        (shown,) = (await security.get(USERS)).json()["accounts"]
        assert not shown["enabled"] and shown["disabled_at"]
        assert (await security.get(USERS, params={"enabled": True})).json()["accounts"] == []

        back = await security.post(
            f"{USERS}/accounts/dr.li/password", json={"password": PASSWORD, "enable": True}
        )
        assert back.json()["enabled"] and await login(stack, "dr.li", PASSWORD) == 200

    (add,) = await audited(stack, "user.add")
    assert add.actor == "sec.chen" and add.role == "security-admin"
    assert add.detail["hospital"] == "H001" and add.detail["username"] == "dr.li"
    assert add.detail["token"]  # the jti of the token used
    assert add.detail["role"] == "doctor" and add.detail["user_hospital"] == "H001"
    resets = await audited(stack, "user.reset")
    assert [r.detail["enabled"] for r in resets] == [False, True]
    (disable,) = await audited(stack, "user.disable")  # the second changed nothing
    assert disable.actor == "sec.chen" and disable.detail["reason"] == "left"
    # No password in an answer, the audit trail or a log line.
    trail = json.dumps([r.detail for r in await audited(stack, "user.add") + resets])
    assert logs.lines  # the requests were logged
    lines = json.dumps(logs.lines, default=str)
    for secret in (PASSWORD, NEW_PASSWORD):
        assert secret not in trail and secret not in lines
    assert "argon2" not in trail


async def test_a_security_admin_maps_and_disables_a_person_of_the_issuer(
    stack: Stack, security: httpx.AsyncClient
) -> None:
    person = {"issuer": ISSUER, "subject": "u-1234", "role": "finance", "hospital": "H002"}
    mapped = await security.post(f"{USERS}/oidc", json={**person, "display_name": " 王会计 "})
    assert mapped.status_code == 201, mapped.text
    assert mapped.json()["display_name"] == "王会计" and mapped.json()["enabled"]
    platform = {"issuer": ISSUER, "subject": "u-qc", "role": "qc"}
    assert (await security.post(f"{USERS}/oidc", json=platform)).json()["hospital"] == "*"
    listed = (await security.get(USERS, params={"issuer": ISSUER})).json()
    assert [u["subject"] for u in listed["mapped"]] == ["u-1234", "u-qc"]
    assert listed["accounts"] == []  # an issuer asked for: its people only
    only = (await security.get(USERS, params={"hospital": "*"})).json()
    assert [u["subject"] for u in only["mapped"]] == ["u-qc"]

    off = await security.post(
        f"{USERS}/oidc/disable", json={"issuer": ISSUER, "subject": "u-1234", "reason": "left"}
    )
    assert off.json() == {"changed": True}
    (row,) = [u for u in (await security.get(USERS)).json()["mapped"] if u["subject"] == "u-1234"]
    assert not row["enabled"]
    # Mapping again enables them, recording what was before.
    assert (await security.post(f"{USERS}/oidc", json=person)).json()["enabled"]
    maps = await audited(stack, "user.map")
    assert [m.detail["subject"] for m in maps] == ["u-1234", "u-qc", "u-1234"]
    assert maps[-1].detail["before"] == {
        "role": "finance",
        "user_hospital": "H002",
        "disabled": True,
    }
    (disable,) = await audited(stack, "user.disable")
    assert disable.actor == "sec.chen" and disable.detail["hospital"] == "H002"

    # No issuer configured here: one must be named.
    problem(await security.post(f"{USERS}/oidc", json={**person, "issuer": None}), 422, "issuer")
    unknown = {"issuer": ISSUER, "subject": "u-none", "reason": "x"}
    problem(await security.post(f"{USERS}/oidc/disable", json=unknown), 404, "not mapped")


async def test_a_hospital_admin_manages_only_their_own_hospitals_people(
    stack: Stack, security: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    people = [account("dr.own"), account("dr.other", hospital="H002")]
    for body in [*people, account("sec.wu", "security-admin", None)]:
        assert (await security.post(f"{USERS}/accounts", json=body)).status_code == 201
    for subject, home in (("u-own", "H001"), ("u-other", "H002")):
        person = {"issuer": ISSUER, "subject": subject, "role": "doctor", "hospital": home}
        assert (await security.post(f"{USERS}/oidc", json=person)).status_code == 201
    before = len(await audited(stack, "user.add"))

    listed = (await admin.get(USERS)).json()
    assert [a["username"] for a in listed["accounts"]] == ["dr.own"]
    assert [u["subject"] for u in listed["mapped"]] == ["u-own"]
    assert (await admin.get(USERS, params={"hospital": "H001"})).status_code == 200
    problem(await admin.get(USERS, params={"hospital": "H002"}), 403, "acts for H001 only")
    problem(await admin.get(USERS, params={"hospital": "*"}), 403)

    # Granting access is the security administrator's: any role, own hospital or not.
    grants: list[tuple[str, str | None]] = [
        ("doctor", "H001"),
        ("security-admin", None),
        ("platform-admin", None),
    ]
    for role, hospital in grants:
        problem(
            await admin.post(f"{USERS}/accounts", json=account("new.one", role, hospital)),
            403,
            "security-admin",
        )
        mapping = {"issuer": ISSUER, "subject": "u-new", "role": role, "hospital": hospital}
        problem(await admin.post(f"{USERS}/oidc", json=mapping), 403, "security-admin")
    assert len(await audited(stack, "user.add")) == before
    assert len(await audited(stack, "user.map")) == 2

    # Another hospital's people, and platform people, are out of reach.
    reason = {"reason": "not theirs"}
    for username in ("dr.other", "sec.wu"):
        problem(await admin.post(f"{USERS}/accounts/{username}/disable", json=reason), 403)
        enable = {"password": NEW_PASSWORD, "enable": True}
        problem(await admin.post(f"{USERS}/accounts/{username}/password", json=enable), 403)
    other = {"issuer": ISSUER, "subject": "u-other", **reason}
    problem(await admin.post(f"{USERS}/oidc/disable", json=other), 403, "acts for H001 only")
    assert await audited(stack, "user.disable") == []
    assert await audited(stack, "user.reset") == []

    # Their own hospital's: reset and disable, audited with the hospital admin.
    reset = await admin.post(f"{USERS}/accounts/dr.own/password", json={"password": NEW_PASSWORD})
    assert reset.status_code == 200
    own = {"reason": "left the hospital"}
    assert (await admin.post(f"{USERS}/accounts/dr.own/disable", json=own)).json()["changed"]
    mine = {"issuer": ISSUER, "subject": "u-own", **own}
    assert (await admin.post(f"{USERS}/oidc/disable", json=mine)).json()["changed"]
    disables = await audited(stack, "user.disable")
    assert {(d.actor, d.role, d.detail["hospital"]) for d in disables} == {
        ("it.zhou", "admin", "H001")
    }
    (reset_row,) = await audited(stack, "user.reset")
    assert reset_row.actor == "it.zhou" and reset_row.detail["username"] == "dr.own"


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"password": "short"}, 422, "at least 12"),
        ({"password": "x" * 257}, 422, "password"),
        ({"password": "dr.bad"}, 422, "at least 12"),
        ({"username": "-bad"}, 422, "username is 2-64"),
        ({"username": "a" * 65}, 422, "username"),
        ({"role": "adapter"}, 422, "machine"),
        ({"role": "wizard"}, 422, "role"),
        ({"hospital": None}, 422, "hospital role"),
        ({"hospital": "H999"}, 422, "not registered"),
        ({"role": "qc"}, 422, "platform role"),
        ({"display_name": "x" * 201}, 422, "display_name"),
        ({"is_admin": True}, 422, "is_admin"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_accounts_are_problems_that_never_echo_the_password(
    shared_security: httpx.AsyncClient, change: dict[str, Any], status: int, detail: str
) -> None:
    body = {**account("dr.bad"), **change}
    r = await shared_security.post(f"{USERS}/accounts", json=body)
    problem(r, status, detail)
    assert str(body["password"]) not in r.text


async def test_other_refusals_are_problems(security: httpx.AsyncClient) -> None:
    assert (await security.post(f"{USERS}/accounts", json=account("dr.zhao"))).status_code == 201
    problem(await security.post(f"{USERS}/accounts", json=account("DR.ZHAO")), 409, "exists")
    problem(
        await security.post(f"{USERS}/accounts/nobody/disable", json={"reason": "x"}),
        404,
        "no local account",
    )
    problem(await security.post(f"{USERS}/accounts/dr.zhao/disable", json={"reason": ""}), 422)
    problem(
        await security.post(f"{USERS}/accounts/dr.zhao/disable", json={"reason": "   "}),
        422,
        "reason",
    )
    problem(
        await security.post(f"{USERS}/accounts/dr.zhao/password", json={"password": "dr.zhao"}),
        422,
        "at least 12",
    )
    problem(
        await security.post(
            f"{USERS}/accounts/dr.zhao/password", json={"password": "dr.zhao" + " " * 8}
        ),
        422,
        "cannot be the username",
    )
    problem(await security.post(f"{USERS}/accounts/oidc:abc/disable", json={"reason": "x"}), 422)
    bad_issuer = {"issuer": "http://idp.example", "subject": "s", "role": "qc"}
    problem(await security.post(f"{USERS}/oidc", json=bad_issuer), 422, "https")
    spaced = {"issuer": ISSUER, "subject": " s ", "role": "qc"}
    problem(await security.post(f"{USERS}/oidc", json=spaced), 422, "subject")
    problem(await security.get(USERS, params={"hospital": "H" * 33}), 422)


async def test_other_roles_are_refused(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        problem(await anonymous.get(USERS), 401)
    for role, hospital in (("doctor", "H001"), ("platform-admin", "*"), ("audit", "*")):
        async with api_client(stack, role, hospital) as client:
            problem(await client.get(USERS), 403)
            problem(await client.post(f"{USERS}/accounts", json=account("x.y")), 403)
