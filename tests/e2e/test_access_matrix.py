"""Every route × every role × own/other hospital → the status the role table promises.

One real stack (SQLite) for the module; each case is one HTTP request with a recorded
token. Hospital-role callers hold a token of H001 ("own": the hospital the request acts
on) or of H002 ("other"); platform roles act for '*'. The table is checked against the
app's own route table, so a route added without an entry here fails
`test_every_route_has_an_entry`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from broker.api.app import create_app
from broker.domain.actors import ALL_HOSPITALS, HOSPITAL_ROLES, PLATFORM_ROLES, Actor, Role
from broker.domain.recognition import Order
from broker.runtime import Stack, running_stack
from broker.services import users as user_service
from broker.services.checks import CheckRequest, run_check
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import notification, result
from tests import factories as f
from tests.conftest import bearer, certify, free_port
from tests.unit.test_imaging_endpoints import endpoint, imaging_with_endpoints

pytestmark = pytest.mark.asyncio(loop_scope="module")

OWN, OTHER = "H001", "H002"
SECURITY = Actor("sec.tests", Role.SECURITY_ADMIN, ALL_HOSPITALS)  # adds people to act on
ISSUER = "https://idp.example/realms/matrix"
ANONYMOUS = "anonymous"
CALLERS = [
    ANONYMOUS,
    *(f"{r.value}:{rel}" for r in sorted(HOSPITAL_ROLES) for rel in ("own", "other")),
    *(r.value for r in sorted(PLATFORM_ROLES)),
]
REFERENCE_READERS = [c for c in CALLERS if c not in (ANONYMOUS, "audit")]


@dataclass
class World:
    stack: Stack
    client: httpx.AsyncClient
    headers: dict[str, dict[str, str]]  # caller -> Authorization header
    check_id: str
    notice_id: str
    report_id: str

    async def token_of(self, role: Role, hospital: str) -> str:
        issued = await self.stack.container.issue_token(
            f"target-{uuid.uuid4().hex[:6]}", role, hospital, by="tests"
        )
        return issued.jti


Request = tuple[str, str, dict[str, Any]]  # method, url, httpx keyword arguments
Builder = Callable[[World], Awaitable[Request]]


@dataclass(frozen=True)
class Expect:
    build: Builder
    ok: Mapping[str, int] = field(default_factory=dict)  # caller -> status; others 403
    every: int | None = None  # the same status for every caller, anonymous included

    def status(self, caller: str) -> int:
        if self.every is not None:
            return self.every
        if caller == ANONYMOUS:
            return 401
        return self.ok.get(caller, 403)


def get(url: str, **kwargs: Any) -> Builder:
    async def build(_: World) -> Request:
        return "GET", url, kwargs

    return build


def call(method: str, url: str, **kwargs: Any) -> Builder:
    async def build(_: World) -> Request:
        return method, url, kwargs

    return build


def allow(callers: list[str] | str, status: int = 200) -> dict[str, int]:
    return dict.fromkeys([callers] if isinstance(callers, str) else callers, status)


async def _check(w: World) -> Request:
    body = {
        "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
        "ordering_hospital": OWN,
        "order_time": datetime.now(UTC).isoformat(),
        "items": [{"system": "http://loinc.org", "code": "718-7"}],
    }
    return "POST", "/api/v1/recognition/check", {"json": body}


async def _outcome(w: World) -> Request:
    body = {"items": [{"index": 0, "outcome": "accepted"}]}
    return "POST", f"/api/v1/recognition/{w.check_id}/outcome", {"json": body}


async def _read_notice(w: World) -> Request:
    return "POST", f"/api/v1/notifications/{w.notice_id}/read", {}


def _hospital(hid: str, level: str = "3") -> dict[str, Any]:
    return {"id": hid, "name": f"Hospital {hid}", "region": "510502", "level": level}


async def _new_hospital(w: World) -> Request:
    return "POST", "/api/v1/admin/hospitals", {"json": _hospital(f"H9{uuid.uuid4().hex[:6]}")}


async def _replace_own(w: World) -> Request:
    return "PUT", f"/api/v1/admin/hospitals/{OWN}", {"json": _hospital(OWN)}


async def _certify_own(w: World) -> Request:
    body = {
        "scope": "HEMATOLOGY",
        "body": "provincial-eqa",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
    }
    return "POST", f"/api/v1/admin/hospitals/{OWN}/certifications", {"json": body}


async def _map_own(w: World) -> Request:
    body = {
        "hospital": OWN,
        "system": f"urn:mrb:hospital:{OWN}:lab-code",
        "code": f"X{uuid.uuid4().hex[:6]}",
        "catalog_code": "LAB-HGB",
    }
    return "POST", "/api/v1/admin/mappings", {"json": body}


async def _revoke_own(w: World) -> Request:
    jti = await w.token_of(Role.DOCTOR, OWN)
    return "POST", "/api/v1/admin/tokens/revoke", {"json": {"jti": jti, "reason": "tests"}}


async def _own_account(w: World) -> str:
    """A new local account of OWN (added by a security administrator), its username."""
    name = f"u{uuid.uuid4().hex[:8]}"
    await user_service.add_account(
        w.stack.container.web_uow(), SECURITY, username=name, password="p" * 12,
        role=Role.DOCTOR, hospital=OWN,
    )  # fmt: skip
    return name


async def _add_account(w: World) -> Request:
    body = {"username": f"u{uuid.uuid4().hex[:8]}", "password": "p" * 12, "role": "doctor",
            "hospital": OWN}  # fmt: skip
    return "POST", "/api/v1/admin/users/accounts", {"json": body}


async def _reset_own(w: World) -> Request:
    url = f"/api/v1/admin/users/accounts/{await _own_account(w)}/password"
    return "POST", url, {"json": {"password": "q" * 12}}


async def _disable_own(w: World) -> Request:
    url = f"/api/v1/admin/users/accounts/{await _own_account(w)}/disable"
    return "POST", url, {"json": {"reason": "tests"}}


def _person() -> dict[str, str]:
    return {"issuer": ISSUER, "subject": f"s-{uuid.uuid4().hex[:8]}", "role": "doctor",
            "hospital": OWN}  # fmt: skip


async def _map_person(w: World) -> Request:
    return "POST", "/api/v1/admin/users/oidc", {"json": _person()}


async def _disable_person(w: World) -> Request:
    person = _person()
    await user_service.map_user(
        w.stack.container.access_uow(), SECURITY, issuer=ISSUER, subject=person["subject"],
        role=Role.DOCTOR, hospital=OWN,
    )  # fmt: skip
    body = {"issuer": ISSUER, "subject": person["subject"], "reason": "tests"}
    return "POST", "/api/v1/admin/users/oidc/disable", {"json": body}


async def _fhir_read(w: World) -> Request:
    return "GET", f"/fhir/DiagnosticReport/{w.report_id}", {}


async def _endpoint_read(w: World) -> Request:
    """A study's Endpoint (where its images are): served under the same read route."""
    found = await w.client.get(
        "/fhir/ImagingStudy", params=PATIENT, headers=w.headers["doctor:own"]
    )
    (study,) = [e["resource"] for e in found.json()["entry"] if e["search"]["mode"] == "match"]
    return "GET", f"/fhir/{study['endpoint'][0]['reference']}", {}


async def _audit_read(w: World) -> Request:
    found = await w.client.get("/fhir/AuditEvent", headers=w.headers["audit"])
    return "GET", f"/fhir/AuditEvent/{found.json()['entry'][0]['resource']['id']}", {}


async def _bad_login(w: World) -> Request:
    return "POST", "/auth/login", {"json": {"username": "nobody", "password": "x" * 12}}


async def _logout(w: World) -> Request:
    return "POST", "/auth/logout", {}


PATIENT = {"subject:identifier": f"{f.NATIONAL}|{f.PATIENT_A}"}
DOCTORS = ["doctor:own", "doctor:other"]  # doctors read other hospitals' results: the point
NO_SUCH = "/fhir/Nope/a/b"

EXPECTED: dict[str, Expect] = {
    # Operations, documentation, pages: no token.
    "GET /healthz": Expect(get("/healthz"), every=200),
    "GET /readyz": Expect(get("/readyz"), every=200),
    "GET /openapi.json": Expect(get("/openapi.json"), every=200),
    "GET /docs": Expect(get("/docs"), every=200),
    "GET /docs/oauth2-redirect": Expect(get("/docs/oauth2-redirect"), every=200),
    "GET /redoc": Expect(get("/redoc"), every=200),
    "GET /doctor": Expect(get("/doctor"), every=200),
    "GET /finance": Expect(get("/finance"), every=200),
    "GET /admin": Expect(get("/admin"), every=200),
    "GET /login": Expect(get("/login"), every=200),
    # Web login: a bearer token is no session (test_web_login.py covers sessions).
    "POST /auth/login": Expect(_bad_login, every=401),
    "GET /auth/session": Expect(get("/auth/session"), every=401),
    "POST /auth/logout": Expect(_logout, every=401),
    # OpenID Connect sign-in: not configured in this stack (test_oidc_login.py covers it).
    "GET /auth/methods": Expect(get("/auth/methods"), every=200),
    "GET /auth/oidc/start": Expect(get("/auth/oidc/start"), every=404),
    "GET /auth/oidc/callback": Expect(get("/auth/oidc/callback?code=c&state=s"), every=404),
    "MOUNT /static": Expect(get("/static/style.css"), every=200),
    # Recognition: doctors of the ordering hospital.
    "POST /api/v1/recognition/check": Expect(_check, allow("doctor:own")),
    "POST /api/v1/recognition/{check_id}/outcome": Expect(_outcome, allow("doctor:own")),
    "GET /api/v1/recognition/decline-reasons": Expect(
        get("/api/v1/recognition/decline-reasons"), allow(REFERENCE_READERS)
    ),
    # A doctor's own notices only: another hospital's doctor finds none (404, not 403).
    "GET /api/v1/notifications": Expect(get("/api/v1/notifications"), allow(DOCTORS)),
    "POST /api/v1/notifications/{notice_id}/read": Expect(
        _read_notice, {"doctor:own": 204, "doctor:other": 404}
    ),
    # Finance.
    "GET /api/v1/savings": Expect(
        get("/api/v1/savings", params={"hospital": OWN}),
        allow(["finance:own", "platform-finance"]),
    ),
    "GET /api/v1/reports/regulator": Expect(
        get("/api/v1/reports/regulator", params={"month": "2026-05"}), allow("platform-finance")
    ),
    "GET /api/v1/ledger/periods": Expect(
        get("/api/v1/ledger/periods"),
        allow(["finance:own", "finance:other", "platform-finance", "platform-admin"]),
    ),
    "POST /api/v1/ledger/periods/{month}/close": Expect(
        call("POST", "/api/v1/ledger/periods/2020-01/close"), allow("platform-admin")
    ),
    # The registry: platform-admin; certifications: qc; reference reads: all but audit.
    "GET /api/v1/admin/hospitals": Expect(get("/api/v1/admin/hospitals"), allow(REFERENCE_READERS)),
    "POST /api/v1/admin/hospitals": Expect(_new_hospital, allow("platform-admin", 201)),
    "PUT /api/v1/admin/hospitals/{hospital_id}": Expect(_replace_own, allow("platform-admin")),
    "POST /api/v1/admin/hospitals/{hospital_id}/certifications": Expect(
        _certify_own, allow("qc", 201)
    ),
    "GET /api/v1/admin/catalog": Expect(get("/api/v1/admin/catalog"), allow(REFERENCE_READERS)),
    "GET /api/v1/catalog/items": Expect(
        get("/api/v1/catalog/items", params={"q": "血红蛋白"}), allow(REFERENCE_READERS)
    ),
    "GET /api/v1/reference/vocabulary": Expect(
        get("/api/v1/reference/vocabulary"), allow(REFERENCE_READERS)
    ),
    # Patient identity (links span hospitals): platform-admin only; unknown ids are 404.
    "GET /api/v1/admin/identity/reviews": Expect(
        get("/api/v1/admin/identity/reviews"), allow("platform-admin")
    ),
    "POST /api/v1/admin/identity/reviews/{review_id}/decision": Expect(
        call("POST", "/api/v1/admin/identity/reviews/nope/decision", json={"decision": "reject"}),
        allow("platform-admin", 404),
    ),
    "POST /api/v1/admin/identity/links": Expect(
        call(
            "POST",
            "/api/v1/admin/identity/links",
            json={"into": {"person_id": "nope-a"}, "person": {"person_id": "nope-b"}},
        ),
        allow("platform-admin", 404),
    ),
    "POST /api/v1/admin/identity/unlink": Expect(
        call("POST", "/api/v1/admin/identity/unlink", json={"person": {"person_id": "nope"}}),
        allow("platform-admin", 404),
    ),
    # Code mappings: the hospital's admin, or platform-admin.
    "GET /api/v1/admin/mappings/unmapped": Expect(
        get("/api/v1/admin/mappings/unmapped", params={"hospital": OWN}),
        allow(["admin:own", "platform-admin"]),
    ),
    "POST /api/v1/admin/mappings": Expect(_map_own, allow(["admin:own", "platform-admin"], 201)),
    # Users' tokens: the hospital's admin, or security-admin.
    "GET /api/v1/admin/tokens": Expect(
        get("/api/v1/admin/tokens", params={"hospital": OWN}),
        allow(["admin:own", "security-admin"]),
    ),
    "POST /api/v1/admin/tokens/revoke": Expect(_revoke_own, allow(["admin:own", "security-admin"])),
    # People who sign in: granting access is security-admin's (ISSUING); listing, resetting
    # and disabling follow tokens (the hospital's admin for its own people).
    "GET /api/v1/admin/users": Expect(
        get("/api/v1/admin/users", params={"hospital": OWN}),
        allow(["admin:own", "security-admin"]),
    ),
    "POST /api/v1/admin/users/accounts": Expect(_add_account, allow("security-admin", 201)),
    "POST /api/v1/admin/users/accounts/{username}/password": Expect(
        _reset_own, allow(["admin:own", "security-admin"])
    ),
    "POST /api/v1/admin/users/accounts/{username}/disable": Expect(
        _disable_own, allow(["admin:own", "security-admin"])
    ),
    "POST /api/v1/admin/users/oidc": Expect(_map_person, allow("security-admin", 201)),
    "POST /api/v1/admin/users/oidc/disable": Expect(
        _disable_person, allow(["admin:own", "security-admin"])
    ),
    # FHIR: doctors only; metadata and unknown paths need no token.
    "GET /fhir/metadata": Expect(get("/fhir/metadata"), every=200),
    # IHE PIXm / PDQm: registered EHR clients (their own signed JWT) only; every mrb
    # token, whatever its role, is refused (tests/integration/test_pixm_pdqm.py).
    "GET /fhir/Patient/$ihe-pix": Expect(
        get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": PATIENT["subject:identifier"]})
    ),
    "POST /fhir/Patient/$match": Expect(
        call("POST", "/fhir/Patient/$match", json={"resourceType": "Parameters"})
    ),
    # Patient search: a doctor by identifier (one named patient); registered machine
    # clients by demographics too (PDQm ITI-78, with their own JWT, not an mrb token).
    "GET /fhir/Patient": Expect(
        get("/fhir/Patient", params={"identifier": PATIENT["subject:identifier"]}),
        allow(DOCTORS),
    ),
    "POST /fhir/Patient/_search": Expect(
        call("POST", "/fhir/Patient/_search", data={"identifier": PATIENT["subject:identifier"]}),
        allow(DOCTORS),
    ),
    "GET /fhir/{resource_type}": Expect(
        get("/fhir/DiagnosticReport", params=PATIENT), allow(DOCTORS)
    ),
    "POST /fhir/{resource_type}/_search": Expect(
        call("POST", "/fhir/DiagnosticReport/_search", data=PATIENT), allow(DOCTORS)
    ),
    "GET /fhir/{resource_type}/{rid}": Expect(_fhir_read, allow(DOCTORS)),
    # The audit trail: audit, and nobody else.
    "GET /fhir/AuditEvent": Expect(get("/fhir/AuditEvent"), allow("audit")),
    "POST /fhir/AuditEvent/_search": Expect(
        call("POST", "/fhir/AuditEvent/_search", data={"_count": "5"}), allow("audit")
    ),
    "GET /fhir/AuditEvent/{rid}": Expect(_audit_read, allow("audit")),
    # A patient's access report is read from the audit trail: audit, and nobody else.
    "GET /api/v1/patients/access-report": Expect(
        get("/api/v1/patients/access-report", params={"identifier": PATIENT["subject:identifier"]}),
        allow("audit"),
    ),
    # Consent and opt-out: doctors of a hospital holding the patient's results (the
    # patient's results here are OTHER's); the break-glass report: security-admin, audit.
    "GET /api/v1/patients/consents": Expect(
        get("/api/v1/patients/consents", params={"identifier": PATIENT["subject:identifier"]}),
        {"doctor:own": 404, "doctor:other": 200},
    ),
    "POST /api/v1/patients/consents": Expect(
        call(
            "POST",
            "/api/v1/patients/consents",
            json={
                "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
                "kind": "sensitive",
                "category": "HIV",
                "evidence": "FORM-MATRIX",
                "expires": "2099-01-01T00:00:00+08:00",
            },
        ),
        {"doctor:own": 404, "doctor:other": 201},
    ),
    "POST /api/v1/patients/consents/{consent_id}/withdraw": Expect(
        call("POST", f"/api/v1/patients/consents/{uuid.uuid4()}/withdraw"),
        {"doctor:own": 404, "doctor:other": 404},
    ),
    "GET /api/v1/audit/break-glass": Expect(
        get("/api/v1/audit/break-glass"), allow(["security-admin", "audit"])
    ),
    **{
        f"{m} /fhir/{{rest:path}}": Expect(call(m, NO_SUCH), every=404)
        for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    },
    # CDS Hooks: discovery is public; services take the EHR's own signed JWT, never an mrb
    # token, so every caller here is refused.
    "GET /cds-services": Expect(get("/cds-services"), every=200),
    "POST /cds-services/{service_id}": Expect(
        call("POST", "/cds-services/mrb-order-select", json={}), every=401
    ),
    "POST /cds-services/{service_id}/feedback": Expect(
        call("POST", "/cds-services/mrb-order-select/feedback", json={}), every=401
    ),
    # HIS launch (docs/his-launch.md): the launch needs the HIS's signed launch JWT, the
    # launch API its launch session, the read-back the HIS's JWT: no mrb token opens any.
    "GET /launch": Expect(get("/launch"), every=401),
    "GET /launch/check": Expect(get("/launch/check"), every=200),
    "GET /launch/api/session": Expect(get("/launch/api/session"), every=401),
    "POST /launch/api/check": Expect(call("POST", "/launch/api/check"), every=401),
    "POST /launch/api/{check_id}/outcome": Expect(
        call("POST", "/launch/api/x/outcome", json={"items": []}), every=401
    ),
    "GET /launch/decision/{check_id}": Expect(get("/launch/decision/x"), every=401),
}


def route_keys(stack: Stack) -> set[str]:
    """`METHOD path` for every route the API serves (HEAD beside GET is GET's)."""
    keys: set[str] = set()
    for ctx in iter_route_contexts(create_app(stack.container).routes):
        if isinstance(ctx.route, Mount):
            keys.add(f"MOUNT {ctx.path}")
            continue
        methods = set(ctx.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")
        keys.update(f"{m} {ctx.path}" for m in methods)
    return keys


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("matrix")
    settings = Settings(
        data_dir=tmp / "data",
        http_port=free_port(),
        metrics_port=0,
        create_keys=True,
        rate_limit_per_minute=0,  # hundreds of requests from one address in seconds
        rate_limit_per_address_per_minute=0,
        distinct_patients_per_hour=0,
    )
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
        c = stack.container
        async with c.sessions() as s, s.begin():
            for hid in (OWN, OTHER, "H003"):
                await hospitals.add(s, hospitals.Hospital(hid, f"Hospital {hid}", "510502", "3"))
                await hospitals.add_key(s, hid, f.key_id(hid), f.public_b64(hid))
        await certify(c, OTHER, valid_to=date(2035, 12, 31))
        today = date.today().isoformat()
        value = f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None)
        (indexed,) = await c.ingest_service().process_batch([f.inbound(value, OTHER)])
        assert indexed.outcome.value == "indexed", indexed.detail
        study = imaging_with_endpoints(contained=[endpoint("https://pacs.example/dicom-web")])
        (indexed,) = await c.ingest_service().process_batch([f.inbound(study, OTHER)])
        assert indexed.outcome.value == "indexed", indexed.detail
        headers = {}
        for caller in CALLERS[1:]:
            name, _, rel = caller.partition(":")
            hospital = ALL_HOSPITALS if not rel else (OWN if rel == "own" else OTHER)
            subject = f"{name}@{hospital}" if rel else f"{name}.tests"
            headers[caller] = await bearer(c, name, hospital, subject)
        doctor = Actor(f"doctor@{OWN}", Role.DOCTOR, OWN)
        hb = Order("http://loinc.org", "718-7")
        request = CheckRequest(f.NATIONAL, f.PATIENT_A, OWN, datetime.now(UTC), (hb,))
        answer = await run_check(c.check_uow(), c.rules_provider(), request, doctor)
        assert answer.items[0].decision.decision.value == "RECOGNIZABLE"
        notice_id = str(uuid.uuid4())
        async with c.sessions() as s, s.begin():
            result_id = (await s.execute(result.select().limit(1))).first().id  # type: ignore[union-attr]
            await s.execute(
                notification.insert().values(
                    notice_id=notice_id,
                    dedupe_key=notice_id,
                    hospital_id=OWN,
                    recipient=doctor.name,
                    check_id=answer.check_id,
                    item_index=0,
                    result_id=result_id,
                    kind="withdrawn",
                    new_status="entered-in-error",
                    action="reverse",
                    message={"zh": "撤回", "en": "withdrawn"},
                    created_at=datetime.now(UTC),
                )
            )
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
            found = await client.get(
                "/fhir/DiagnosticReport", params=PATIENT, headers=headers["doctor:own"]
            )
            report_id = found.json()["entry"][0]["resource"]["id"]
            yield World(stack, client, headers, answer.check_id, notice_id, report_id)


# Paths served by a route above whose own access is checked too (a type the generic
# route serves by id only).
PATHS: dict[str, Expect] = {
    "GET /fhir/Endpoint/{rid}": Expect(_endpoint_read, allow(DOCTORS)),
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("path", sorted(PATHS))
async def test_path_answers_each_caller_as_the_role_table_says(
    world: World, path: str, caller: str
) -> None:
    expect = PATHS[path]
    method, url, kwargs = await expect.build(world)
    r = await world.client.request(method, url, headers=world.headers.get(caller, {}), **kwargs)
    assert r.status_code == expect.status(caller), r.text[:300]


async def test_the_callers_cover_every_role() -> None:
    roles = {c.partition(":")[0] for c in CALLERS if c != ANONYMOUS}
    assert roles == {r.value for r in Role}


async def test_every_route_has_an_entry(world: World) -> None:
    served = route_keys(world.stack)
    assert served - EXPECTED.keys() == set(), "routes without an entry in EXPECTED"
    assert EXPECTED.keys() - served == set(), "entries for routes the app does not serve"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(EXPECTED))
async def test_route_answers_each_caller_as_the_role_table_says(
    world: World, route: str, caller: str
) -> None:
    expect = EXPECTED[route]
    method, url, kwargs = await expect.build(world)
    headers = world.headers.get(caller, {})
    r = await world.client.request(method, url, headers=headers, **kwargs)
    assert r.status_code == expect.status(caller), r.text[:300]
