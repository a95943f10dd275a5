"""No patient identifier, name or accession number in logs, errors or metrics.

A realistic morning on one API (in process, SQLite): results with a resident ID, an MRN,
a name and an accession number are ingested (and one with a mistyped resident ID is
refused), a doctor runs checks and searches FHIR by the patient's identifier, requests
are refused (no token, another hospital, the wrong role), a CDS client sends a bad hook
call, and some requests fail (an invalid resident ID, an unknown resource, an unknown
route with the identifier in its path). Every log record (root logger at DEBUG through
mrb's own logging set-up, rendered and raw), everything written to stdout and stderr,
the Prometheus metrics text, every error body and header the API returned and the
request ids stored on audit entries (one caller sends the resident ID as X-Request-ID
and as a CDS hookInstance) are then searched for each identifying value, as given and
in lower and upper case.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS
from broker.ingest.service import Outcome
from broker.observability import configure_logging
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer, certify

RESIDENT_ID = f.PATIENT_A  # 11010519491231002X: the final X has a lower-case form too
MISTYPED_ID = "110105194912310021"  # the same person, one digit wrong (bad check digit)
MRN = "MRN-LOGSCAN-7731"
MRN_SYSTEM = "urn:oid:2.16.156.10011.0.1.mrn"
ACCESSION = "ACC-LOGSCAN-4411"
ACCESSION_2 = "ACC-LOGSCAN-4412"
NAMES = ("欧阳明月", "Ouyang", "Mingyue")
SECRETS = (RESIDENT_ID, MISTYPED_ID, MRN, ACCESSION, ACCESSION_2, *NAMES)
LOINC = "http://loinc.org"


class Captured(logging.Handler):
    """Every record, as mrb's formatter renders it and as its raw fields."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.texts: list[str] = []
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.texts.append(self.format(record))
        self.texts.append(repr(record.__dict__))
        self.texts.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    saved_levels = [(lg, lg.level) for lg in loggers]
    configure_logging("DEBUG")
    handler = Captured(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for lg, level in saved_levels:
            lg.setLevel(level)


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


def patient(national_id: str = RESIDENT_ID) -> dict[str, Any]:
    p = f.patient(national_id, MRN, pid="p-logscan", mrn_system=MRN_SYSTEM)
    p["name"] = [{"text": NAMES[0], "family": NAMES[1], "given": [NAMES[2]]}]
    return p


def check(value: str = RESIDENT_ID, ordering: str = "H002") -> dict[str, Any]:
    return {
        "patient": {"system": f.NATIONAL, "value": value},
        "ordering_hospital": ordering,
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": [{"system": LOINC, "code": "718-7"}, {"system": LOINC, "code": "777-3"}],
    }


def hook_call(token_like: str | None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/dr-li",
            "patientId": RESIDENT_ID,
            "selections": ["ServiceRequest/hb"],
            "draftOrders": {"resourceType": "Bundle", "entry": []},
        },
        "prefetch": {"patient": patient()},
    }
    if token_like is not None:
        call["fhirAuthorization"] = {"access_token": token_like, "token_type": "Bearer"}
    return call


def found(texts: list[str], secret: str) -> list[str]:
    forms = {secret, secret.lower(), secret.upper()}
    return [t[:300] for t in texts if any(form in t for form in forms)]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_no_identifier_in_logs_errors_or_metrics(
    container: Container,
    api: httpx.AsyncClient,
    captured: Captured,
    capfd: pytest.CaptureFixture[str],
) -> None:
    await certify(container, "H001")
    errors: list[str] = []

    async def call(expect: int, method: str, url: str, **kw: Any) -> httpx.Response:
        r = await api.request(method, url, **kw)
        assert r.status_code == expect, (method, url, r.status_code, r.text)
        if r.status_code >= 400:
            errors.append(r.text)
            errors.append(repr(dict(r.headers)))
        return r

    # Ingest: two panels for the patient.
    ingest = container.ingest_service()
    good = [
        f.inbound(f.lab_bundle(accession=acc, pat=patient()), "H001")
        for acc in (ACCESSION, ACCESSION_2)
    ]
    processed = await ingest.process_batch(good)
    assert [p.outcome for p in processed] == [Outcome.INDEXED] * 2, [p.detail for p in processed]
    # A mistyped resident ID (whatever ingest makes of it), and a message signed with
    # another hospital's key (refused).
    mistyped = f.inbound(f.lab_bundle(accession="ACC-X", pat=patient(MISTYPED_ID)), "H001")
    forged = f.inbound(f.lab_bundle(accession="ACC-Y", pat=patient()), "H001", signer="H002")
    _, refused = await ingest.process_batch([mistyped, forged])
    assert refused.outcome != Outcome.INDEXED, refused.detail

    doctor = await bearer(container, "doctor", "H002", "dr.li")
    finance = await bearer(container, "finance", "H002", "fin.wang")
    # A doctor's checks: the results are there, and asked again the same morning, once
    # by an EHR that puts the patient's resident ID in X-Request-ID (a correlation id is
    # logged, echoed and stored on the audit entry: this one is replaced by a new one).
    for request_id in (None, RESIDENT_ID):
        headers = doctor | ({"X-Request-ID": request_id} if request_id else {})
        r = await call(200, "POST", "/api/v1/recognition/check", json=check(), headers=headers)
        assert r.json()["items"][0]["decision"] == "RECOGNIZABLE", r.text
        assert r.headers["x-request-id"] != RESIDENT_ID
    # Refused: no token, another hospital's order, a role that may not check.
    await call(401, "POST", "/api/v1/recognition/check", json=check())
    await call(
        403, "POST", "/api/v1/recognition/check", json=check(ordering="H001"), headers=doctor
    )
    await call(403, "POST", "/api/v1/recognition/check", json=check(), headers=finance)
    # FHIR search by the patient's identifiers (hits, and the lower-case form).
    for identifier in (
        f"{f.NATIONAL}|{RESIDENT_ID}",
        f"{MRN_SYSTEM}|{MRN}",
    ):
        r = await call(
            200, "GET", "/fhir/Patient", params={"identifier": identifier}, headers=doctor
        )
        assert r.json()["resourceType"] == "Bundle", r.text
    r = await call(
        200,
        "GET",
        "/fhir/Observation",
        params={"subject:identifier": f"{f.NATIONAL}|{RESIDENT_ID.lower()}"},
        headers=doctor,
    )
    assert r.json()["entry"], r.text
    # A CDS client's bad calls: a made-up JWT, and a hook call with the patient but no
    # hookInstance (a body that does not validate).
    cds = "/cds-services/mrb-recognition-order-select"
    await call(401, "POST", cds, json=hook_call(None), headers={"Authorization": "Bearer a.b.c"})
    broken = hook_call(RESIDENT_ID)
    broken["hookInstance"] = RESIDENT_ID  # the EHR's id for the call: never logged as is
    await call(401, "POST", cds, json=broken, headers={"Authorization": "Bearer a.b.c"})
    del broken["hookInstance"]
    r = await api.post(cds, json=broken)
    assert r.status_code in (401, 422), r.text
    errors.extend((r.text, repr(dict(r.headers))))
    # Errors: an invalid resident ID, the identifier where a resource id goes, an unknown
    # route with the identifier in its path, a search with a mistyped one.
    await call(422, "POST", "/api/v1/recognition/check", json=check(MISTYPED_ID), headers=doctor)
    await call(404, "GET", f"/fhir/Patient/{RESIDENT_ID}", headers=doctor)
    await call(404, "GET", f"/api/v1/patients/{RESIDENT_ID}/{ACCESSION}", headers=doctor)
    r = await api.get(
        "/fhir/Patient", params={"identifier": f"{f.NATIONAL}|{MISTYPED_ID}"}, headers=doctor
    )
    assert r.status_code in (200, 400), r.text
    errors.extend((r.text, repr(dict(r.headers))))

    out, err = capfd.readouterr()
    metrics = generate_latest(REGISTRY).decode()
    # The scan saw something: the access log has a line per request, metrics per route.
    assert captured.count >= 15
    assert "mrb_http_request_seconds" in metrics and "/fhir/{resource_type}" in metrics
    assert len(errors) == 2 * 10  # ten refused or failed requests, body and headers
    places = {"logs": captured.texts, "stdout/stderr": [out, err], "metrics": [metrics]}
    places["error bodies"] = errors
    async with container.sessions() as s:  # correlation ids stored with the audit entries
        places["audit request ids"] = [
            str(v) for v in (await s.execute(select(audit_event.c.request_id))).scalars()
        ]
    assert places["audit request ids"], "the checks were audited"
    leaks = {
        (where, secret): hits
        for where, texts in places.items()
        for secret in SECRETS
        if (hits := found(texts, secret))
    }
    assert not leaks, leaks


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_unknown_fhir_ids_are_not_echoed(
    container: Container, api: httpx.AsyncClient
) -> None:
    """A resident ID put where a resource id goes: 404 without repeating it (the error
    body ends up in clients' and proxies' logs)."""
    doctor = await bearer(container, "doctor", "H002", "dr.li")
    audit = await bearer(container, "audit", ALL_HOSPITALS, "auditor.zhao")
    for path, headers in (
        ("/fhir/Patient", doctor),
        ("/fhir/Observation", doctor),
        ("/fhir/DiagnosticReport", doctor),
        ("/fhir/AuditEvent", audit),
    ):
        r = await api.get(f"{path}/{RESIDENT_ID}", headers=headers)
        assert r.status_code == 404, r.text
        assert r.json()["issue"][0]["code"] == "not-found"
        assert "is known to mrb" in r.text
        assert RESIDENT_ID not in r.text and RESIDENT_ID.lower() not in r.text


def test_debug_logging_leaves_out_sql_parameters() -> None:
    """At DEBUG, aiosqlite and SQLAlchemy would log every statement with its parameters."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = ("aiosqlite", "sqlalchemy", "sqlalchemy.engine.Engine")
    levels = [logging.getLogger(n).level for n in names]
    try:
        configure_logging("DEBUG")
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger("broker.access").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in zip(names, levels, strict=True):
            logging.getLogger(name).setLevel(level)
