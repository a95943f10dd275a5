"""The patient's access report (PIPL Arts. 44-45), on SQLite and PostgreSQL: the reads a
patient's data met, made through the real use cases and the API, and nothing else."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import select

from broker.api.app import create_app
from broker.api.deps import get_actor
from broker.api.routes import fhir
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.ledger import OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.services.access_report import ReportRequest
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.storage.tables import audit_event, person
from tests import factories as f
from tests.conftest import certify

AUDITOR = Actor("auditor.wang", Role.AUDIT, ALL_HOSPITALS)
DR_LI = Actor("dr.li", Role.DOCTOR, "H002")  # orders at H002
DR_WANG = Actor("dr.wang", Role.DOCTOR, "H001")  # searches at H001
HB = Order(system=f.LOINC, code="718-7")  # H001 has it: recognised
WBC = Order(system=f.LOINC, code="6690-2")  # nobody has it: the check finds nothing
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
IDENTIFIER = f"{f.NATIONAL}|{f.PATIENT_A}"
URL = "/api/v1/patients/access-report"


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container)
    if not any(getattr(r, "path", None) == "/fhir/metadata" for r in app.routes):
        app.include_router(fhir.router)
    app.state.caller = AUDITOR
    app.dependency_overrides[get_actor] = lambda: app.state.caller
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


def acting(api: httpx.AsyncClient, actor: Actor) -> None:
    api._transport.app.state.caller = actor  # type: ignore[attr-defined]


async def check(c: Container, order: Order, patient: str = f.PATIENT_A) -> str:
    request = CheckRequest(f.NATIONAL, patient, DR_LI.hospital, MAY_20, (order,))
    answer = await run_check(c.check_uow(), c.reference_rules(), request, DR_LI)
    return answer.check_id


async def report(api: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    r = await api.get(URL, params={"identifier": IDENTIFIER, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def seen(body: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (e["action"]["code"], e["actor"]["name"], e["hospital"]["id"], e["purpose"]["code"])
        for e in body["entries"]
    ]


@pytest.fixture
async def reads(container: Container, api: httpx.AsyncClient) -> dict[str, str]:
    """H001's blood count for patient A; recognised at H002 (accepted), searched at H001,
    then a check that finds nothing; patient B is looked up once (mrb knows nobody)."""
    await certify(container)
    (indexed,) = await container.ingest_service().process_batch([f.inbound(f.lab_bundle())])
    assert indexed.outcome.value == "indexed", indexed.detail
    recognised = await check(container, HB)
    accepted = OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED))
    catalog = container.reference_rules().catalog
    await record_outcomes(container.outcome_uow(), catalog, recognised, [accepted], DR_LI)
    acting(api, DR_WANG)
    found = await api.get("/fhir/DiagnosticReport", params={"subject:identifier": IDENTIFIER})
    assert found.status_code == 200, found.text
    nothing = await check(container, WBC)
    other = await check(container, HB, patient=f.PATIENT_B)
    acting(api, AUDITOR)
    return {"recognised": recognised, "nothing": nothing, "other": other}


async def test_the_report_lists_exactly_the_reads_made(
    api: httpx.AsyncClient, reads: dict[str, str]
) -> None:
    body = await report(api)
    assert seen(body) == [
        ("recognition-check", "dr.li", "H002", "order-entry"),
        ("fhir-search", "dr.wang", "H001", "treatment"),
        ("recognition-check", "dr.li", "H002", "order-entry"),
    ]
    first, search, nothing = body["entries"]
    assert [e["at"] for e in body["entries"]] == sorted(e["at"] for e in body["entries"])
    assert first["action"]["zh"] == "互认检查" and first["purpose"]["zh"] == "开具检查检验"
    assert first["hospital"]["name"] == "Hospital H002"
    assert first["actor"]["zh"] == "医生"
    assert first["at_local"].endswith("+08:00")
    (shown,) = first["results"]
    assert shown["hospital"]["id"] == "H001" and shown["date"] == "2026-05-18"
    (use,) = first["recognitions"]
    assert use["check_id"] == reads["recognised"]
    assert use["ordering_hospital"]["id"] == "H002" and use["result"] == shown
    assert (use["decision"]["code"], use["outcome"], use["reversed"]) == (
        "RECOGNIZABLE",
        "accepted",
        False,
    )
    assert body["recognitions"] == [use]
    # A search records how many it returned, never which: the report says so.
    assert search["results"] == [] and "not which" in search["results_note"]["en"]
    assert nothing["results"] == [] and nothing["recognitions"] == []
    assert nothing["results_note"]["zh"] == "未找到既往结果"


async def test_another_patients_reads_never_appear(
    api: httpx.AsyncClient, reads: dict[str, str]
) -> None:
    mine = await report(api)
    assert reads["other"] not in str(mine)
    # Patient B is unknown to mrb: the look-up still named them, so it is in their report.
    r = await api.get(URL, params={"identifier": f"{f.NATIONAL}|{f.PATIENT_B}"})
    theirs = r.json()
    assert theirs["patient"]["person_id"] is None
    assert seen(theirs) == [("recognition-check", "dr.li", "H002", "order-entry")]
    assert theirs["entries"][0]["results_note"]["en"] == "no prior result was found"


async def test_the_period_excludes_earlier_reads(
    api: httpx.AsyncClient, container: Container, reads: dict[str, str]
) -> None:
    person_id = (await report(api))["patient"]["person_id"]
    two_years_ago = datetime.now(UTC) - timedelta(days=730)
    await _audit(container, two_years_ago, person_id, actor="dr.old")
    assert "dr.old" not in {e[1] for e in seen(await report(api))}  # default: 12 months
    since = (two_years_ago - timedelta(days=1)).date().isoformat()
    assert seen(await report(api, **{"from": since}))[0][1] == "dr.old"
    later = datetime.now(UTC).date() + timedelta(days=2)
    after = {"from": later.isoformat(), "to": (later + timedelta(days=1)).isoformat()}
    assert (await report(api, **after))["entries"] == []


async def test_reads_under_a_merged_person_appear(
    api: httpx.AsyncClient, container: Container, reads: dict[str, str]
) -> None:
    survivor = (await report(api))["patient"]["person_id"]
    merged = str(uuid.uuid4())
    async with container.sessions() as s, s.begin():
        await s.execute(person.insert().values(id=merged, created_at=datetime.now(UTC)))
        await s.execute(person.update().where(person.c.id == merged).values(merged_into=survivor))
    await _audit(container, datetime.now(UTC), merged, actor="dr.merged")
    body = await report(api)
    assert seen(body)[-1][1] == "dr.merged"
    bundle = (await api.get(_url(format="fhir"))).json()
    last = bundle["entry"][-1]["resource"]
    patient = next(e for e in last["entity"] if e["type"]["code"] == "1")
    assert patient["what"] == {"reference": f"Patient/{survivor}"}  # the survivor


async def test_the_fhir_export_is_a_valid_bundle_of_audit_events(
    api: httpx.AsyncClient, reads: dict[str, str]
) -> None:
    r = await api.get(_url(format="fhir"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/fhir+json"
    bundle = r.json()
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 3
    for e in bundle["entry"]:
        AuditEvent.model_validate(e["resource"])
    assert f.PATIENT_A not in r.text  # the patient is Patient/<person id>, never the number
    check = bundle["entry"][0]["resource"]
    refs = [x.get("what", {}).get("reference", "") for x in check["entity"]]
    assert any(ref.startswith("Patient/") for ref in refs)
    assert any(ref.startswith("DiagnosticReport/") for ref in refs)


async def test_the_csv_is_chinese_with_a_bom(api: httpx.AsyncClient, reads: dict[str, str]) -> None:
    r = await api.get(_url(format="csv"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["时间", "访问者", "角色", "医院", "操作", "目的", "结果", "互认"]
    assert [row[4] for row in rows[1:]] == ["互认检查", "检索检验检查结果", "互认检查"]
    assert "已采纳" in rows[1][7] and "Hospital H001" in rows[1][6]


async def test_only_the_audit_role_may_and_producing_it_is_audited(
    api: httpx.AsyncClient, container: Container, reads: dict[str, str]
) -> None:
    acting(api, DR_LI)
    refused = await api.get(_url())
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    with pytest.raises(Forbidden):
        await container.access_reports().report(DR_LI, ReportRequest(f.NATIONAL, f.PATIENT_A))
    acting(api, AUDITOR)
    first = await report(api)
    async with container.sessions() as s:
        query = select(audit_event).where(audit_event.c.action == "patient-access-report")
        rows = (await s.execute(query)).all()
    (entry,) = rows
    assert (entry.actor, entry.purpose, entry.person_id) == (
        "auditor.wang",
        "patient-request",
        first["patient"]["person_id"],
    )
    assert entry.patient_pseudonym and f.PATIENT_A not in str(entry.detail)
    # Not in the report it produced; in the next one.
    assert "patient-access-report" not in {e[0] for e in seen(first)}
    assert seen(await report(api))[-1] == (
        "patient-access-report",
        "auditor.wang",
        ALL_HOSPITALS,
        "patient-request",
    )


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"format": "xml"}, "format"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "before"),
        ({"from": "2020-01-01", "to": "2026-01-02"}, "5 years"),
        ({"identifier": "no-bar"}, "system|value"),
        ({"identifier": f"{f.NATIONAL}|110105194912310021"}, "check digit"),
        ({"identifier": "urn:mrn|123"}, "hospital"),
        ({"identifier": "urn:mrn|123", "hospital": "H999"}, "not registered"),
    ],
)
async def test_bad_input_gets_a_problem(
    api: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    r = await api.get(URL, params={"identifier": IDENTIFIER, **params})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]


def _url(**params: str) -> str:
    return str(httpx.URL(URL, params={"identifier": IDENTIFIER, **params}))


async def _audit(c: Container, at: datetime, person_id: str, *, actor: str) -> None:
    async with c.sessions() as s, s.begin():
        await s.execute(
            audit_event.insert().values(
                at=at,
                actor=actor,
                role="doctor",
                hospital_id="H001",
                action="fhir-read",
                purpose="treatment",
                person_id=person_id,
                detail={"resource": "DiagnosticReport/gone", "outcome": "read"},
            )
        )
