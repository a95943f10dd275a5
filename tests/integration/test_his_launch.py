"""HIS launch (docs/his-launch.md) over HTTP with real signed JWTs, on SQLite and PostgreSQL:
the launch URL, its session that can check one patient's launched items only, the
refusals (each audited), framing by the client's registered HIS origins only, the
read-back, and what is stored of a launch (its own tables; no patient identifier)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.domain.registry import Certification, CertifyingBody
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.cds_store import SqlCdsClients
from broker.storage.cds_tables import cds_jti
from broker.storage.launch_tables import his_launch_check, his_launch_session
from broker.storage.tables import audit_event, recognition_outcome
from tests import factories as f
from tests.integration.test_cds_hooks import EC_KEY, RSA_KEY, index, public_jwk

BASE = "https://testserver"
ISS = "https://his.h002.example.cn/"
HIS_ORIGIN = "https://his.h002.example.cn"
OTHER_ISS = "https://his.h001.example.cn/"
HGB = {"system": "http://loinc.org", "code": "718-7"}
PLT = {"system": "http://loinc.org", "code": "777-3"}


def launch_token(
    *,
    iss: str = ISS,
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str = "his-1",
    aud: str = f"{BASE}/launch",
    hospital: str = "H002",
    lifetime: int = 120,
    iat: int | None = None,
    jti: str | None = None,
    items: list[dict[str, Any]] | None = None,
    patient: dict[str, str] | None = None,
) -> str:
    now = int(time.time()) if iat is None else iat
    return jwt.encode(
        {
            "iss": iss,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": jti or str(uuid.uuid4()),
            "sub": "D0042",
            "hospital": hospital,
            "patient": patient or {"system": f.NATIONAL, "value": f.PATIENT_A},
            "items": items or [HGB],
        },
        key,
        algorithm=alg,
        headers={"kid": kid, "typ": "JWT"},
    )


def client_jwt(path: str, *, iss: str = ISS, key: Any = EC_KEY, kid: str = "his-1") -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": iss, "aud": f"{BASE}{path}", "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())},
        key,
        algorithm="ES384" if kid == "his-1" else "RS384",
        headers={"kid": kid, "typ": "JWT"},
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_base_url": f"{BASE}/"})


@pytest.fixture
async def http(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    today = date.today()
    async with container.sessions() as s, s.begin():
        await hospitals.certify(
            s,
            Certification(
                "H001",
                "HEMATOLOGY",
                CertifyingBody.PROVINCIAL_EQA,
                today - timedelta(days=300),
                today + timedelta(days=300),
            ),
            reference=None,
        )
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
    await index(container, f.lab_bundle(effective=yesterday, last_updated=yesterday))
    async with container.sessions() as s, s.begin():
        await cds_clients.register_client(
            SqlCdsClients(s),
            ISS,
            "H002",
            jwks={"keys": [public_jwk(EC_KEY, "his-1")]},
            launch_origins=[HIS_ORIGIN + "/"],  # stored as the origin
        )
        await cds_clients.register_client(
            SqlCdsClients(s),
            OTHER_ISS,
            "H001",
            jwks={"keys": [public_jwk(RSA_KEY, "ris-1")]},
            launch_origins=["https://his.h001.example.cn"],
        )
    app = create_app(container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def audits(c: Container, action: str) -> list[dict[str, Any]]:
    async with c.sessions() as s:
        rows = await s.execute(select(audit_event).where(audit_event.c.action == action))
        return [dict(r._mapping) for r in rows]


async def open_launch(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await http.get("/launch", params={"token": token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/launch/check"
    page = await http.get(r.headers["location"])
    assert page.status_code == 200
    assert "token" not in str(page.url) and f.PATIENT_A not in str(page.url)
    info = await http.get("/launch/api/session")
    assert info.status_code == 200, info.text
    data: dict[str, Any] = info.json()
    return data


async def test_a_launch_checks_the_launched_items_of_that_patient_only(
    http: httpx.AsyncClient, container: Container
) -> None:
    r = await http.get("/launch", params={"token": launch_token(items=[HGB, PLT])})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "__Host-mrb_launch=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=none" in cookie.lower() and "Partitioned" in cookie
    assert r.headers["referrer-policy"] == "no-referrer"
    page = await http.get("/launch/check")
    csp = page.headers["content-security-policy"]
    assert f"frame-ancestors {HIS_ORIGIN};" in csp
    assert "x-frame-options" not in page.headers
    info = (await http.get("/launch/api/session")).json()
    assert info["user"] == "D0042" and info["hospital"] == "H002"
    assert f.PATIENT_A not in str(info) and info["patient"].endswith(f.PATIENT_A[-4:])
    assert info["parent_origins"] == [HIS_ORIGIN]
    assert {r["code"] for r in info["decline_reasons"]}
    headers = {"X-CSRF-Token": info["csrf_token"]}
    assert (await http.post("/launch/api/check")).status_code == 403  # no CSRF token
    checked = await http.post("/launch/api/check", headers=headers)
    assert checked.status_code == 200, checked.text
    body = checked.json()
    assert body["codes"] == ["718-7", "777-3"]
    assert [i["requested"] for i in body["items"]] == [HGB, PLT]
    assert body["items"][0]["decision"] == "RECOGNIZABLE"
    # The session has no other use: the API does not know its cookie.
    other = await http.post(
        "/api/v1/recognition/check",
        headers=headers,
        json={
            "patient": {"system": f.NATIONAL, "value": f.PATIENT_B},
            "ordering_hospital": "H002",
            "order_time": "2026-05-20T09:00:00+08:00",
            "items": [HGB],
        },
    )
    assert other.status_code == 401
    outcome = await http.post(
        f"/launch/api/{body['check_id']}/outcome",
        headers=headers,
        json={"items": [{"index": 0, "outcome": "accepted"}]},
    )
    assert outcome.status_code == 200, outcome.text
    assert outcome.json()["items"][0]["recorded_by"] == "D0042"
    # Another check id is not this session's.
    stray = await http.post(
        f"/launch/api/{uuid.uuid4()}/outcome",
        headers=headers,
        json={"items": [{"index": 0, "outcome": "accepted"}]},
    )
    assert stray.status_code == 404
    async with container.sessions() as s:
        (row,) = (await s.execute(select(recognition_outcome))).all()
    assert row.hospital_id == "H002" and row.outcome == "accepted"
    (launched,) = await audits(container, "his.launch")
    assert launched["actor"] == "D0042" and launched["hospital_id"] == "H002"
    assert f.PATIENT_A not in str(launched)

    # Read back by the HIS with its signed JWT.
    path = f"/launch/decision/{body['check_id']}"
    back = await http.get(path, headers={"Authorization": f"Bearer {client_jwt(path)}"})
    assert back.status_code == 200, back.text
    items = back.json()["items"]
    assert [(i["code"], i["decision"], i["outcome"]) for i in items] == [
        ("718-7", "RECOGNIZABLE", "accepted"),
        ("777-3", items[1]["decision"], None),
    ]
    # Another hospital's client cannot read it; nor can anyone unsigned.
    other_jwt = client_jwt(path, iss=OTHER_ISS, key=RSA_KEY, kid="ris-1")
    assert (
        await http.get(path, headers={"Authorization": f"Bearer {other_jwt}"})
    ).status_code == 404
    assert (await http.get(path)).status_code == 401


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda: launch_token(iat=int(time.time()) - 600, lifetime=120)),
        ("too long-lived", lambda: launch_token(lifetime=3600)),
        ("wrong signature", lambda: launch_token(key=RSA_KEY, alg="RS384")),
        ("wrong audience", lambda: launch_token(aud=f"{BASE}/cds-services/x")),
        ("hospital mismatch", lambda: launch_token(hospital="H001")),
        ("unknown client", lambda: launch_token(iss="https://nobody.example/")),
        ("garbage", lambda: "not-a-jwt"),
    ],
)
async def test_refused_launches_open_nothing_and_are_audited(
    http: httpx.AsyncClient, container: Container, case: str, make: Any
) -> None:
    r = await http.get("/launch", params={"token": make()}, headers={"Accept": "text/html"})
    assert r.status_code == 401, case
    assert "set-cookie" not in r.headers
    assert "互认检查无法打开" in r.text and "Recognition check not opened" in r.text
    assert "frame-ancestors" in r.headers["content-security-policy"]
    problem = await http.get("/launch", params={"token": make()})
    assert problem.status_code == 401
    assert problem.headers["content-type"].startswith("application/problem+json")
    refused = await audits(container, "his.launch.refused")
    assert len(refused) == 2, case
    assert all(f.PATIENT_A not in str(e) for e in refused)
    assert (await http.get("/launch/api/session")).status_code == 401
    page = await http.get("/launch/check")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_a_launch_token_is_single_use(http: httpx.AsyncClient, container: Container) -> None:
    token = launch_token()
    assert (await http.get("/launch", params={"token": token})).status_code == 303
    http.cookies.clear()
    again = await http.get("/launch", params={"token": token})
    assert again.status_code == 401
    (refused,) = await audits(container, "his.launch.refused")
    assert "replay" in refused["detail"]["reason"]
    assert (await http.get("/launch/api/session")).status_code == 401


async def test_a_forged_or_ended_session_cookie_is_nothing(
    http: httpx.AsyncClient, container: Container
) -> None:
    await open_launch(http, launch_token())
    cookie = http.cookies.get("__Host-mrb_launch")
    assert cookie and len(cookie) == 43  # the session id only: the launch stays server-side
    for forged in (f"{cookie}x", cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), "x" * 200):
        http.cookies.clear()
        http.cookies.set("__Host-mrb_launch", forged)
        assert (await http.get("/launch/api/session")).status_code == 401
    http.cookies.clear()
    http.cookies.set("__Host-mrb_launch", cookie)
    assert (await http.get("/launch/api/session")).status_code == 200
    async with container.sessions() as s, s.begin():  # the session ends (expires)
        await s.execute(
            update(his_launch_session).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await http.get("/launch/api/session")).status_code == 401


async def test_a_launch_is_stored_in_its_own_tables_sealed_and_purged_when_expired(
    http: httpx.AsyncClient, container: Container
) -> None:
    info = await open_launch(http, launch_token(items=[HGB, PLT]))
    checked = await http.post("/launch/api/check", headers={"X-CSRF-Token": info["csrf_token"]})
    assert checked.status_code == 200, checked.text
    check_id = checked.json()["check_id"]
    async with container.sessions() as s:
        (session,) = (await s.execute(select(his_launch_session))).all()
        (check,) = (await s.execute(select(his_launch_check))).all()
        spent = (await s.execute(select(cds_jti))).all()
    cookie = http.cookies.get("__Host-mrb_launch")
    assert cookie and cookie not in str(session) and len(session.id_hash) == 64
    assert (session.issuer, session.hospital_id, session.user_id) == (ISS, "H002", "D0042")
    assert f.PATIENT_A.encode() not in session.launch and b"718-7" not in session.launch
    assert session.expires_at - session.created_at == timedelta(minutes=15)
    assert (check.check_id, check.session_hash, check.issuer, check.hospital_id) == (
        check_id,
        session.id_hash,
        ISS,
        "H002",
    )
    assert check.expires_at > datetime.now(UTC) + timedelta(days=6)
    # The replay store holds the launch JWT's jti, under its issuer, and nothing else.
    assert [r.issuer for r in spent] == [ISS]
    assert all(f.PATIENT_A not in str(r) for r in (*spent, check))

    # Expired sessions and checks are purged when the next launch opens.
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with container.sessions() as s, s.begin():
        await s.execute(update(his_launch_session).values(expires_at=past))
        await s.execute(update(his_launch_check).values(expires_at=past))
    path = f"/launch/decision/{check_id}"
    back = await http.get(path, headers={"Authorization": f"Bearer {client_jwt(path)}"})
    assert back.status_code == 404  # the read-back window closed
    http.cookies.clear()
    await open_launch(http, launch_token())
    async with container.sessions() as s:
        sessions = (await s.execute(select(his_launch_session.c.id_hash))).scalars().all()
        checks = (await s.execute(select(his_launch_check))).all()
    assert session.id_hash not in sessions and len(sessions) == 1 and checks == []


async def test_the_registered_origins_frame_the_page_and_follow_the_registry(
    http: httpx.AsyncClient, container: Container
) -> None:
    await open_launch(http, launch_token())

    async def csp() -> str:
        return str((await http.get("/launch/check")).headers["content-security-policy"])

    assert f"frame-ancestors {HIS_ORIGIN};" in await csp()
    second = "https://emr.h002.example.cn:8443"
    async with container.sessions() as s, s.begin():
        assert await cds_clients.set_launch_origins(SqlCdsClients(s), ISS, [HIS_ORIGIN, second])
    assert f"frame-ancestors {HIS_ORIGIN} {second};" in await csp()
    info = (await http.get("/launch/api/session")).json()
    assert info["parent_origins"] == [HIS_ORIGIN, second]
    async with container.sessions() as s, s.begin():
        assert await cds_clients.set_launch_origins(SqlCdsClients(s), ISS, [])
    assert "frame-ancestors 'none';" in await csp()
    assert (await http.get("/launch/api/session")).json()["parent_origins"] == []
    # Revoking the client ends its live launch sessions.
    async with container.sessions() as s, s.begin():
        await cds_clients.set_launch_origins(SqlCdsClients(s), ISS, [HIS_ORIGIN])
        assert await cds_clients.revoke_client(SqlCdsClients(s), ISS)
    assert (await http.get("/launch/api/session")).status_code == 401
    assert "frame-ancestors 'none';" in await csp()


async def test_other_pages_still_refuse_framing(http: httpx.AsyncClient) -> None:
    for path in ("/doctor", "/login"):
        csp = (await http.get(path)).headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
