"""GET /fhir/AuditEvent: the audit trail as IHE BALP AuditEvents, for the audit role only,
on SQLite and PostgreSQL; every resource is valid R4 (fhir.resources' R4B models)."""

from __future__ import annotations

import base64
import json
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
from broker.bootstrap import AuditTrail, Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.fhir.balp import BALP
from broker.storage.tables import audit_event
from tests import factories as f

FHIR_JSON = "application/fhir+json"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUDITOR = Actor("auditor.wang", Role.AUDIT, ALL_HOSPITALS)
DOCTOR = Actor("dr.li", Role.DOCTOR, "H002")
DAY = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
PSEUDONYM = "ab" * 32
# One entry of each kind, a day apart: (action, purpose, pseudonym, person, detail).
ENTRIES: list[tuple[str, str, str | None, str | None, dict[str, Any] | None]] = [
    ("fhir-search", "treatment", PSEUDONYM, "P-1",
     {"resource_type": "Observation", "parameters": ["code", "subject:identifier"],
      "offset": 0, "total": 7, "returned": 7}),
    ("fhir-read", "emergency-treatment", None, "P-1",
     {"resource": "DiagnosticReport/R-1", "outcome": "read"}),
    ("recognition-check", "order-entry", PSEUDONYM, "P-1", {"check_id": "C-1", "items": 2}),
    ("safety-notice", "patient-safety", None, "P-1", {"notice_id": "N-1", "check_id": "C-1"}),
    ("fhir-read", "treatment", None, "P-1",
     {"resource": "DiagnosticReport/R-2", "outcome": "gone"}),
    ("registry.key.add", "administration", None, None,
     {"hospital": "H001", "key_id": "H001-2026", "token": None}),
]  # fmt: skip


@pytest.fixture
async def trail(container: Container) -> list[int]:
    """The entries above, recorded a day apart from DAY; their audit ids."""
    async with container.sessions() as s, s.begin():
        for i, (action, purpose, pseudonym, person, detail) in enumerate(ENTRIES):
            await s.execute(
                audit_event.insert().values(
                    at=DAY + timedelta(days=i),
                    actor="dr.li" if purpose != "administration" else "platform-admin.zhao",
                    role="doctor" if purpose != "administration" else "platform-admin",
                    hospital_id="H002" if purpose != "administration" else ALL_HOSPITALS,
                    action=action,
                    purpose=purpose,
                    patient_pseudonym=pseudonym,
                    person_id=person,
                    detail=detail,
                )
            )
        rows = await s.execute(select(audit_event.c.id).order_by(audit_event.c.id))
        return [r.id for r in rows]


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container)
    if not any(getattr(r, "path", None) == "/fhir/metadata" for r in app.routes):
        app.include_router(fhir.router)
    app.state.caller = AUDITOR
    # Who is calling: an auditor unless a test says otherwise (tokens are tested elsewhere).
    app.dependency_overrides[get_actor] = lambda: app.state.caller
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


async def search(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await api.get("/fhir/AuditEvent", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == FHIR_JSON
    bundle: dict[str, Any] = r.json()
    get_fhir_model_class("Bundle").model_validate(bundle)
    for e in bundle.get("entry", []):
        if e["resource"]["resourceType"] == "AuditEvent":
            AuditEvent.model_validate(e["resource"])
    return bundle


def events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def by_action(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        next(c["code"] for c in (ev.get("subtype") or [ev["type"]]) if "mrb" in c["system"])
        + ("-gone" if ev["outcome"] != "0" else ""): ev
        for ev in events(bundle)
    }


def coding(concept: dict[str, Any]) -> tuple[str, str]:
    c = concept["coding"][0] if "coding" in concept else concept
    return c["system"], c["code"]


class TestTheBalpShape:
    async def test_a_patient_query(self, api: httpx.AsyncClient, trail: list[int]) -> None:
        ev = by_action(await search(api))["fhir-search"]
        assert ev["meta"]["profile"] == [BALP + "PatientQuery"]
        assert coding(ev["type"]) == (
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
        )
        assert coding(ev["subtype"][0]) == (
            "http://hl7.org/fhir/restful-interaction",
            "search-type",
        )
        assert (ev["action"], ev["outcome"], ev["recorded"]) == (
            "E",
            "0",
            "2026-05-01T02:00:00.000Z",
        )
        user, client, server = ev["agent"]
        assert coding(user["type"]) == (
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "IRCP",
        )
        assert user["requestor"] is True and user["who"]["display"] == "dr.li"
        assert user["role"][0]["text"] == "doctor"
        assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
        assert user["purposeOfUse"][0]["text"] == "treatment"
        assert coding(client["type"]) == ("http://dicom.nema.org/resources/ontology/DCM", "110153")
        assert client["who"]["type"] == "Organization"
        assert client["who"]["identifier"] == {"system": "urn:mrb:hospital", "value": "H002"}
        assert coding(server["type"])[1] == "110152"
        assert server["network"] == {"address": "http://mrb.test/fhir", "type": "5"}
        assert ev["source"]["observer"]["display"] == "mrb"
        query, patient = ev["entity"]
        assert coding(query["role"]) == ("http://terminology.hl7.org/CodeSystem/object-role", "24")
        text = "GET Observation?code&subject:identifier"
        assert query["description"] == text
        assert base64.b64decode(query["query"]).decode() == text
        assert coding(patient["type"])[1] == "1" and coding(patient["role"])[1] == "1"
        assert patient["what"] == {
            "reference": "Patient/P-1",
            "identifier": {"system": "urn:mrb:patient-pseudonym", "value": PSEUDONYM},
        }

    async def test_reads_queries_and_changes(
        self, api: httpx.AsyncClient, trail: list[int]
    ) -> None:
        found = by_action(await search(api))
        read = found["fhir-read"]
        assert read["meta"]["profile"] == [BALP + "PatientRead"]
        assert (read["action"], coding(read["subtype"][0])[1]) == ("R", "read")
        assert [coding(a["type"])[1] for a in read["agent"][1:]] == ["110152", "110153"]
        assert read["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
        assert read["entity"][0]["what"] == {"reference": "DiagnosticReport/R-1"}
        gone = found["fhir-read-gone"]
        assert gone["outcome"] == "4" and "meta" not in gone and "410" in gone["outcomeDesc"]
        check = found["recognition-check"]
        assert check["meta"]["profile"] == [BALP + "PatientQuery"]
        assert check["entity"][0]["description"] == "recognition check C-1 (2 items)"
        notice = found["safety-notice"]
        assert notice["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "PATSFTY"
        assert notice["entity"][0]["what"]["identifier"]["value"] == "N-1"
        change = found["registry.key.add"]
        assert "meta" not in change and "subtype" not in change
        assert change["type"] == {"system": "urn:mrb:audit-action", "code": "registry.key.add"}
        assert change["action"] == "C" and len(change["entity"]) == 1
        assert {d["type"]: d["valueString"] for d in change["entity"][0]["detail"]} == {
            "hospital": "H001",
            "key_id": "H001-2026",
        }
        assert change["agent"][1]["who"]["identifier"]["value"] == "*"

    async def test_no_identifier_ever_leaves(
        self, api: httpx.AsyncClient, container: Container
    ) -> None:
        identifier = f.NATIONAL + "|" + f.PATIENT_A
        async with container.sessions() as s, s.begin():
            await s.execute(
                audit_event.insert().values(
                    at=DAY, actor="dr.li", role="doctor", hospital_id="H002",
                    action="fhir-search", purpose="treatment", patient_pseudonym=PSEUDONYM,
                    person_id="P-9",
                    detail={"resource_type": "Patient", "parameters": ["identifier"]},
                )
            )  # fmt: skip
        body = json.dumps(await search(api))
        assert f.PATIENT_A not in body and identifier not in body
        assert "GET Patient?identifier" in body

    async def test_a_sealed_entry_names_its_place_in_the_chain(
        self, api: httpx.AsyncClient, container: Container, trail: list[int]
    ) -> None:
        await AuditTrail(container.settings, container.sessions).sealer().seal_once()
        ev = events(await search(api, _sort="date", _count=1))[0]
        chain = {x["url"]: x["valueString"] for x in ev["extension"][0]["extension"]}
        assert ev["extension"][0]["url"] == "urn:mrb:fhir:extension:audit-chain"
        assert chain["seq"] == "1" and len(chain["hash"]) == 64


class TestSearch:
    async def test_date_ranges_count_and_paging(
        self, api: httpx.AsyncClient, trail: list[int]
    ) -> None:
        # 2026-05-02 .. 2026-05-04 in the server's zone (Asia/Shanghai): three entries.
        bundle = await search(api, date=["ge2026-05-02", "le2026-05-04"], _count=2)
        assert bundle["total"] == 3
        first = [e["id"] for e in events(bundle)]
        assert first == [str(trail[3]), str(trail[2])]  # newest first
        nxt = next(x["url"] for x in bundle["link"] if x["relation"] == "next")
        page2 = await search(api, **dict(httpx.URL(nxt).params))
        assert [e["id"] for e in events(page2)] == [str(trail[1])]
        assert page2["total"] == 3 and not any(x["relation"] == "next" for x in page2["link"])
        previous = next(x["url"] for x in page2["link"] if x["relation"] == "previous")
        assert [
            e["id"] for e in events(await search(api, **dict(httpx.URL(previous).params)))
        ] == first

    async def test_oldest_first_and_entries_audited_meanwhile_do_not_shift_pages(
        self, api: httpx.AsyncClient, trail: list[int]
    ) -> None:
        bundle = await search(api, _sort="date", _count=4)
        assert bundle["total"] == len(ENTRIES)
        assert [e["id"] for e in events(bundle)] == [str(i) for i in trail[:4]]
        nxt = next(x["url"] for x in bundle["link"] if x["relation"] == "next")
        page2 = await search(api, **dict(httpx.URL(nxt).params))  # the first search is audited
        assert page2["total"] == len(ENTRIES)
        assert [e["id"] for e in events(page2)] == [str(i) for i in trail[4:]]

    async def test_count_zero_and_unknown_parameters(
        self, api: httpx.AsyncClient, trail: list[int]
    ) -> None:
        assert "entry" not in await search(api, _count=0)
        bundle = await search(api, agent="dr.li")
        outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert "'agent' is not supported for AuditEvent; ignored" in json.dumps(outcome)
        r = await api.get(
            "/fhir/AuditEvent", params={"agent": "x"}, headers={"Prefer": "handling=strict"}
        )
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
        r = await api.get("/fhir/AuditEvent", params={"date": "yesterday"})
        assert r.status_code == 400
        r = await api.post(
            "/fhir/AuditEvent/_search",
            content="date=ge2026-05-06&date=le2026-05-06",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and r.json()["total"] == 1

    async def test_read_by_audit_id(self, api: httpx.AsyncClient, trail: list[int]) -> None:
        r = await api.get(f"/fhir/AuditEvent/{trail[1]}")
        assert r.status_code == 200
        assert AuditEvent.model_validate(r.json()).id == str(trail[1])
        for missing in ("999999", "abc"):
            r = await api.get(f"/fhir/AuditEvent/{missing}")
            assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"

    async def test_reading_the_trail_is_audited(
        self, api: httpx.AsyncClient, container: Container, trail: list[int]
    ) -> None:
        await search(api, date="ge2026-05-01")
        await api.get(f"/fhir/AuditEvent/{trail[0]}")
        async with container.sessions() as s:
            rows = (
                await s.execute(select(audit_event).where(audit_event.c.action == "audit.read"))
            ).all()
        assert [(r.actor, r.role, r.purpose) for r in rows] == [
            ("auditor.wang", "audit", "audit")
        ] * 2
        assert rows[0].detail["resource_type"] == "AuditEvent"
        assert rows[0].detail["parameters"] == ["date"] and rows[0].detail["total"] == len(ENTRIES)
        assert rows[1].detail == {"resource": f"AuditEvent/{trail[0]}"}
        # ... and is itself an AuditEvent (a query without a patient).
        ev = events(await search(api, _count=1))[0]
        assert ev["meta"]["profile"] == [BALP + "Query"]
        assert ev["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "HCOMPL"


class TestWhoMayRead:
    async def test_only_the_audit_role(self, api: httpx.AsyncClient, trail: list[int]) -> None:
        api_app = api._transport.app  # type: ignore[attr-defined]
        for caller in (DOCTOR, Actor("admin.zhao", Role.ADMIN, "H001")):
            api_app.state.caller = caller
            for path in ("/fhir/AuditEvent", f"/fhir/AuditEvent/{trail[0]}"):
                r = await api.get(path)
                assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
                assert "audit token only" in r.json()["issue"][0]["diagnostics"]

    async def test_no_token_is_401(self, container: Container) -> None:
        app = create_app(container)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
            r = await client.get("/fhir/AuditEvent")
        assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"

    async def test_writes_are_405(self, api: httpx.AsyncClient) -> None:
        r = await api.delete("/fhir/AuditEvent/1")
        assert r.status_code == 405

    async def test_the_capability_statement_lists_it(self, api: httpx.AsyncClient) -> None:
        cs = (await api.get("/fhir/metadata")).json()
        (entry,) = [x for x in cs["rest"][0]["resource"] if x["type"] == "AuditEvent"]
        assert [p["name"] for p in entry["searchParam"]] == ["date"]
        assert BALP + "PatientQuery" in entry["supportedProfile"]
