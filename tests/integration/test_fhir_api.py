"""FHIR R4 read and search over HTTP, on SQLite and PostgreSQL, with results indexed by ingest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import Connection, inspect, select, update

from broker.api.app import create_app
from broker.api.routes import fhir
from broker.bootstrap import Container
from broker.domain.identifiers import normalise, resident_id_check_digit
from broker.ingest.service import Outcome
from broker.storage import fhir_tables
from broker.storage.database import create_engine
from broker.storage.fhir_tables import fhir_token
from broker.storage.tables import audit_event, metadata, payload, result, result_version
from tests import factories as f
from tests.conftest import Db, bearer

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
HB = f"{LOINC}|718-7"
A = f"{f.NATIONAL}|{f.PATIENT_A}"
B = f"{f.NATIONAL}|{f.PATIENT_B}"
# (hospital, accession, effective): six months of panels at two hospitals for patient A.
LABS = [
    ("H001", "ACC-1", "2026-01-15T08:30:00+08:00"),
    ("H001", "ACC-2", "2026-02-15T08:30:00+08:00"),
    ("H001", "ACC-3", "2026-03-15T08:30:00+08:00"),
    ("H001", "ACC-4", "2026-04-15T08:30:00+08:00"),
    ("H002", "ACC-5", "2026-05-10T08:30:00+08:00"),
    ("H002", "ACC-6", "2026-05-18T08:30:00+08:00"),
    ("H002", "ACC-7", "2026-06-20T08:30:00+08:00"),
]


def with_fhir(app: Any) -> Any:
    """The API app with the FHIR router (unless the app already wires it in)."""
    if not any(getattr(r, "path", None) == "/fhir/metadata" for r in app.routes):
        app.include_router(fhir.router)
    return app


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = with_fhir(create_app(container))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


async def index(container: Container, *messages: tuple[bytes, str]) -> None:
    processed = await container.ingest_service().process_batch(
        [f.inbound(value, hospital) for value, hospital in messages]
    )
    assert [p.outcome for p in processed] == [Outcome.INDEXED] * len(messages), [
        p.detail for p in processed
    ]


def h2_patient() -> dict[str, Any]:
    return f.patient(mrn="H2-77", mrn_system="urn:h2:mrn", pid="h2p")


@dataclass
class Data:
    container: Container
    api: httpx.AsyncClient
    doctor: dict[str, str]
    pid: str  # patient A's mrb person id

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = await self.api.get(path, params=params or None, headers=self.doctor)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(FHIR_JSON)
        body: dict[str, Any] = r.json()
        return body

    async def search(self, rtype: str, **params: Any) -> dict[str, Any]:
        params.setdefault("patient", self.pid)
        return await self.get(f"/fhir/{rtype}", **params)

    async def error(self, status: int, path: str, **kw: Any) -> dict[str, Any]:
        headers = kw.pop("headers", self.doctor)
        method = kw.pop("method", "GET")
        r = await self.api.request(method, path, params=kw or None, headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith(FHIR_JSON)
        body: dict[str, Any] = r.json()
        assert body["resourceType"] == "OperationOutcome"
        return body


@pytest.fixture
async def data(container: Container, api: httpx.AsyncClient) -> Data:
    messages = [
        (
            f.lab_bundle(
                accession=acc,
                effective=eff,
                hb=12.0 + i,
                pat=f.patient() if hosp == "H001" else h2_patient(),
            ),
            hosp,
        )
        for i, (hosp, acc, eff) in enumerate(LABS)
    ]
    messages.append((f.imaging_bundle(pat=h2_patient()), "H002"))
    # Another patient at H001: never in A's answers.
    messages.append(
        (f.lab_bundle(accession="ACC-B", pat=f.patient(f.PATIENT_B, "MRN-2", pid="pb")), "H001")
    )
    await index(container, *messages)
    doctor = await bearer(container, "doctor", "H002", "dr.li")
    found = await api.get("/fhir/Patient", params={"identifier": A}, headers=doctor)
    pid = found.json()["entry"][0]["resource"]["id"]
    return Data(container, api, doctor, pid)


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def resources(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


def valid(resource: dict[str, Any]) -> None:
    """The resource is valid FHIR (fhir.resources' R4B models, wire-compatible with R4)."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


async def result_ids(container: Container, resource_type: str) -> dict[str, str]:
    async with container.sessions() as s:
        rows = await s.execute(select(result).where(result.c.resource_type == resource_type))
        return {f.business_id_of(container, r).split("|")[-1]: r.id for r in rows.all()}


class TestCapabilityStatement:
    async def test_metadata_says_exactly_what_is_supported(self, api: httpx.AsyncClient) -> None:
        r = await api.get("/fhir/metadata")  # no token needed
        assert r.status_code == 200 and r.headers["content-type"] == FHIR_JSON
        cs = r.json()
        valid(cs)
        assert cs["fhirVersion"] == "4.0.1" and cs["format"] == [FHIR_JSON, "json"]
        rest = {x["type"]: x for x in cs["rest"][0]["resource"]}
        assert set(rest) == {
            "Patient",
            "DiagnosticReport",
            "Observation",
            "ImagingStudy",
            "AuditEvent",  # for the audit role (tests/integration/test_fhir_audit_events.py)
            "Consent",  # the patient's own hospitals' (tests/integration/test_consent_and_...)
            "Endpoint",  # a study's, read only (tests/integration/test_imaging_endpoints.py)
        }
        assert [i["code"] for i in rest.pop("Endpoint")["interaction"]] == ["read"]
        for x in rest.values():
            assert [i["code"] for i in x["interaction"]] == ["read", "search-type"]
        params = {t: {p["name"]: p["type"] for p in x["searchParam"]} for t, x in rest.items()}
        # The doctor's identifier and _id, and IHE PDQm [ITI-78]'s for machine clients
        # (tests/integration/test_pixm_pdqm.py).
        assert params["Patient"] == {
            "identifier": "token",
            "_id": "token",
            "active": "token",
            "family": "string",
            "given": "string",
            "telecom": "token",
            "birthdate": "date",
            "address": "string",
            "address-city": "string",
            "address-state": "string",
            "address-postalcode": "string",
            "address-country": "string",
            "gender": "token",
            "mothersMaidenName": "string",
        }
        assert params["Observation"] == {
            "patient": "reference",
            "subject": "reference",
            "code": "token",
            "date": "date",
            "status": "token",
            "category": "token",
            "identifier": "token",
            "_lastUpdated": "date",
        }
        assert params["ImagingStudy"]["started"] == "date"
        assert params["ImagingStudy"]["modality"] == params["ImagingStudy"]["bodysite"] == "token"
        assert rest["DiagnosticReport"]["searchInclude"] == ["DiagnosticReport:result"]
        assert "searchInclude" not in rest["Observation"]

    async def test_xml_is_not_offered(self, api: httpx.AsyncClient) -> None:
        assert (await api.get("/fhir/metadata", params={"_format": "xml"})).status_code == 406
        r = await api.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
        assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"
        ok = await api.get("/fhir/metadata", headers={"Accept": "application/fhir+json"})
        assert ok.status_code == 200


class TestPatients:
    async def test_search_by_identifier_and_read_give_one_patient_from_both_hospitals(
        self, data: Data
    ) -> None:
        bundle = await data.get("/fhir/Patient", identifier=A)
        valid(bundle)
        assert bundle["type"] == "searchset" and bundle["total"] == 1
        (patient,) = resources(bundle)
        assert patient["id"] == data.pid
        values = {(i["system"], i["value"]) for i in patient["identifier"]}
        # H002's doctor: the resident ID and H002's MRN, never H001's MRN-1
        # (tests/integration/test_patient_identifier_visibility.py).
        assert values == {(f.NATIONAL, f.PATIENT_A), ("urn:h2:mrn", "H2-77")}
        assert patient["meta"]["source"] in ("H001", "H002")
        read = await data.get(f"/fhir/Patient/{data.pid}")
        assert read["id"] == data.pid and read["identifier"] == patient["identifier"]
        by_id = await data.get("/fhir/Patient", _id=data.pid)
        assert ids(by_id) == [data.pid]

    async def test_an_unknown_identifier_finds_nobody(self, data: Data) -> None:
        nobody = "11010119900307123" + resident_id_check_digit("11010119900307123")
        bundle = await data.get("/fhir/Patient", identifier=f"{f.NATIONAL}|{nobody}")
        assert bundle["total"] == 0 and "entry" not in bundle
        obs = await data.get("/fhir/Observation", **{"subject:identifier": "urn:x|nobody"})
        assert obs["total"] == 0
        await data.error(404, "/fhir/Patient/no-such-person")

    async def test_a_hospital_local_identifier_is_read_as_the_callers_hospitals(
        self, data: Data
    ) -> None:
        h2 = await bearer(data.container, "doctor", "H002", "dr.li")
        h1 = await bearer(data.container, "doctor", "H001", "dr.wang")
        for headers, total in ((h2, 1), (h1, 0)):
            r = await data.api.get(
                "/fhir/Patient", params={"identifier": "urn:h2:mrn|H2-77"}, headers=headers
            )
            assert r.json()["total"] == total

    async def test_a_merged_person_points_at_the_survivor(self, data: Data) -> None:
        # H002 first knows a patient by MRN only (a new person), then sends the MRN with
        # patient A's resident ID: the two are one person, the older one survives.
        mrn_only = f.patient(None, "H2-MERGE", pid="h2m", mrn_system="urn:h2:mrn")
        await index(data.container, (f.lab_bundle(accession="ACC-M1", pat=mrn_only), "H002"))
        gone = ids(await data.get("/fhir/Patient", identifier="urn:h2:mrn|H2-MERGE"))[0]
        assert gone != data.pid
        both = f.patient(f.PATIENT_A, "H2-MERGE", pid="h2m", mrn_system="urn:h2:mrn")
        await index(data.container, (f.lab_bundle(accession="ACC-M2", pat=both), "H002"))
        old = await data.get(f"/fhir/Patient/{gone}")
        assert old["active"] is False
        assert old["link"] == [
            {"other": {"reference": f"Patient/{data.pid}"}, "type": "replaced-by"}
        ]
        valid(old)
        # Searching by the old id finds the survivor's results, the merged ones included.
        reports = await data.search("DiagnosticReport", patient=gone)
        accessions = {r["identifier"][0]["value"] for r in resources(reports) if "identifier" in r}
        assert {"ACC-M1", "ACC-M2", "ACC-1"} <= accessions
        assert {r["subject"]["reference"] for r in resources(reports)} == {f"Patient/{data.pid}"}

    async def test_an_invalid_resident_id_is_a_400(self, data: Data) -> None:
        body = await data.error(400, "/fhir/Patient", identifier=f"{f.NATIONAL}|123")
        assert "resident ID" in body["issue"][0]["diagnostics"]
        assert "123" not in body["issue"][0]["diagnostics"].replace("18 characters", "")


class TestSearch:
    async def test_a_patients_results_from_every_hospital(self, data: Data) -> None:
        bundle = await data.search("DiagnosticReport")
        valid(bundle)
        reports = resources(bundle)
        assert bundle["total"] == len(reports) == 8  # 7 lab reports and 1 imaging report
        assert {r["meta"]["source"] for r in reports} == {"H001", "H002"}
        assert {r["subject"]["reference"] for r in reports} == {f"Patient/{data.pid}"}
        accessions = [r["identifier"][0]["value"] for r in reports if r.get("identifier")]
        assert accessions == ["ACC-7", "ACC-6", "ACC-5", "ACC-4", "ACC-3", "ACC-2", "ACC-1"]
        assert reports[-1]["code"]["coding"][0]["code"] == "24627-2"  # no date: last
        # The same through subject:identifier, and by POST with the identifier in the body.
        again = await data.get("/fhir/DiagnosticReport", **{"subject:identifier": A})
        assert ids(again) == ids(bundle)
        r = await data.api.post(
            "/fhir/DiagnosticReport/_search",
            data={"subject:identifier": A},
            headers=data.doctor,
        )
        assert r.status_code == 200 and ids(r.json()) == ids(bundle)
        for e in bundle["entry"]:
            assert e["fullUrl"] == f"http://mrb.test/fhir/DiagnosticReport/{e['resource']['id']}"

    async def test_code_filters(self, data: Data) -> None:
        hb = await data.search("Observation", code=HB)
        assert hb["total"] == 7
        assert {o["code"]["coding"][0]["code"] for o in resources(hb)} == {"718-7"}
        assert (await data.search("Observation", code="718-7"))["total"] == 7
        assert (await data.search("Observation", code="|718-7"))["total"] == 0  # has a system
        assert (await data.search("Observation", code=f"{LOINC}|"))["total"] == 14
        both = await data.search("Observation", code=f"{HB},{LOINC}|777-3")
        assert both["total"] == 14
        assert (await data.search("Observation", code="http://snomed.info/sct|718-7"))["total"] == 0
        lab = await data.search(
            "DiagnosticReport", category="http://terminology.hl7.org/CodeSystem/v2-0074|LAB"
        )
        assert lab["total"] == 7
        assert (await data.search("DiagnosticReport", category="RAD"))["total"] == 1
        assert (await data.search("DiagnosticReport", identifier="urn:lab:H001|ACC-3"))[
            "total"
        ] == 1
        assert (await data.search("DiagnosticReport", identifier="ACC-3"))["total"] == 1
        assert (await data.search("DiagnosticReport", identifier="urn:lab:H001|"))["total"] >= 1
        # The index keeps identifier values only as keyed hashes: no accession in clear.
        async with data.container.sessions() as s:
            codes = (
                await s.execute(select(fhir_token.c.code).where(fhir_token.c.param == "identifier"))
            ).scalars()
            assert not any("ACC-" in c for c in codes)
        assert (await data.search("DiagnosticReport", status="final"))["total"] == 8
        assert (await data.search("DiagnosticReport", status="preliminary"))["total"] == 0

    async def test_date_filters_with_prefixes_and_ranges(self, data: Data) -> None:
        async def total(**params: str) -> int:
            return int(
                (await data.search("DiagnosticReport", code=f"{LOINC}|58410-2", **params))["total"]
            )

        assert await total(date="2026-05") == 2
        assert await total(date="2026") == 7
        assert await total(date="2026-05-18") == 1
        assert await total(date="2026-05-18T08:30:00+08:00") == 1
        assert await total(date="2026-05-18T00:30:00Z") == 1  # the same instant, in UTC
        assert await total(date="ne2026-05") == 5
        assert await total(date="ge2026-05") == 3
        assert await total(date="gt2026-05") == 1
        assert await total(date="lt2026-03") == 2
        assert await total(date="le2026-03") == 3
        assert await total(date="sa2026-04-15") == 3
        assert await total(date="eb2026-02-15") == 1
        assert await total(date="ge2026-02,2026-06") == 6  # OR within a parameter
        params = [("patient", data.pid), ("date", "ge2026-02"), ("date", "lt2026-05")]
        r = await data.api.get("/fhir/DiagnosticReport", params=params, headers=data.doctor)
        assert r.json()["total"] == 3  # AND across repeats
        started = await data.search("ImagingStudy", started="2026-05-10")
        assert started["total"] == 1
        assert (await data.search("ImagingStudy", started="lt2026-05-10"))["total"] == 0
        await data.error(400, "/fhir/DiagnosticReport", patient=data.pid, date="2026-5")

    async def test_partial_dates_and_periods_in_resources_are_ranges(
        self, container: Container, data: Data
    ) -> None:
        month = json.loads(f.lab_bundle(accession="ACC-M", effective="2026-03"))
        period = json.loads(f.lab_bundle(accession="ACC-P"))
        report = period["entry"][1]["resource"]
        del report["effectiveDateTime"]
        report["effectivePeriod"] = {"start": "2026-07-30", "end": "2026-08-02T12:00:00+08:00"}
        await index(
            container,
            (json.dumps(month).encode(), "H001"),
            (json.dumps(period).encode(), "H001"),
        )

        async def accessions(**params: str) -> set[str]:
            bundle = await data.search("DiagnosticReport", **params)
            return {r["identifier"][0]["value"] for r in resources(bundle) if r.get("identifier")}

        # "2026-03" as a resource value is all of March: within March, not within one day.
        assert "ACC-M" in await accessions(date="2026-03")
        assert "ACC-M" not in await accessions(date="2026-03-15")
        assert "ACC-M" in await accessions(date="ap2026-03-15")
        # ge: the range above the value reaches into March, or the value contains it.
        assert "ACC-M" in await accessions(date="ge2026-03-30")
        assert "ACC-M" not in await accessions(date="ge2026-03-31")
        assert "ACC-M" in await accessions(date="le2026-03-02")
        assert "ACC-M" not in await accessions(date="le2026-03-01")
        # The period spans July into August.
        assert "ACC-P" not in await accessions(date="2026-07")
        assert "ACC-P" in await accessions(date="gt2026-07")
        assert "ACC-P" in await accessions(date="lt2026-08")
        assert "ACC-P" in await accessions(date="eq2026")
        assert "ACC-P" in await accessions(date="sa2026-07-29")
        assert "ACC-P" not in await accessions(date="sa2026-07-30")
        assert "ACC-P" in await accessions(date="eb2026-08-03")
        assert "ACC-P" not in await accessions(date="eb2026-08-02")

    async def test_last_updated(self, data: Data) -> None:
        bundle = await data.search("Observation", _lastUpdated="ge2026-01-01")
        assert bundle["total"] == 14
        assert (await data.search("Observation", _lastUpdated="lt2026-01-01"))["total"] == 0
        stamp = resources(bundle)[0]["meta"]["lastUpdated"]
        assert (await data.search("Observation", _lastUpdated=f"eq{stamp}"))["total"] == 14
        assert (await data.search("Observation", _lastUpdated=f"gt{stamp}"))["total"] == 0

    async def test_imaging(self, data: Data) -> None:
        bundle = await data.search("ImagingStudy", modality="CT", bodysite=f"{f.SNOMED}|51185008")
        (study,) = resources(bundle)
        valid(study)
        assert study["meta"]["source"] == "H002"
        assert (await data.search("ImagingStudy", modality="MR"))["total"] == 0
        uid = await data.search("ImagingStudy", identifier="urn:dicom:uid|urn:oid:1.2.3.4")
        assert ids(uid) == [study["id"]]


class TestPaging:
    async def test_paging_to_the_end_and_back_with_accurate_totals(self, data: Data) -> None:
        first = await data.search("Observation", _count="4", _sort="-date")
        assert first["total"] == 14 and len(ids(first)) == 4
        assert link(first, "previous") is None
        seen, pages, bundle = list(ids(first)), [first], first
        while (nxt := link(bundle, "next")) is not None:
            query = parse_qs(urlsplit(nxt).query)
            assert set(query) == {"_cursor"}  # opaque: the search is inside the cursor
            assert f.PATIENT_A not in nxt and data.pid not in nxt
            bundle = await data.get(nxt)
            assert bundle["total"] == 14
            pages.append(bundle)
            seen += ids(bundle)
        assert [len(ids(p)) for p in pages] == [4, 4, 4, 2]
        assert len(seen) == len(set(seen)) == 14
        dates = [o["effectiveDateTime"] for p in pages for o in resources(p)]
        assert dates == sorted(dates, reverse=True)
        back = await data.get(str(link(pages[-1], "previous")))
        assert ids(back) == ids(pages[-2])
        assert ids(await data.get(str(link(pages[-1], "first")))) == ids(first)
        assert ids(await data.get(str(link(first, "last")))) == ids(pages[-1])
        assert ids(await data.get(str(link(pages[1], "self")))) == ids(pages[1])

    async def test_ascending_sort_and_filters_survive_paging(self, data: Data) -> None:
        bundle = await data.search("Observation", code=HB, _sort="date", _count="3")
        dates = []
        while True:
            dates += [o["effectiveDateTime"] for o in resources(bundle)]
            assert bundle["total"] == 7
            nxt = link(bundle, "next")
            if nxt is None:
                break
            bundle = await data.get(nxt)
        assert dates == sorted(dates) and len(dates) == 7

    async def test_count_zero_and_summary_count_give_the_total_only(self, data: Data) -> None:
        for params in ({"_count": "0"}, {"_summary": "count"}):
            bundle = await data.search("Observation", **params)
            assert bundle["total"] == 14 and "entry" not in bundle

    async def test_a_cursor_is_bound_to_its_user(self, data: Data) -> None:
        nxt = link(await data.search("Observation", _count="2"), "next")
        assert nxt is not None
        other = await bearer(data.container, "doctor", "H002", "dr.wang")
        body = await data.error(403, nxt, headers=other)
        assert "another user" in body["issue"][0]["diagnostics"]
        # The same user with a new token may go on.
        assert (
            await data.api.get(nxt, headers=await bearer(data.container, "doctor", "H002", "dr.li"))
        ).status_code == 200

    async def test_an_altered_or_misused_cursor_is_refused(self, data: Data) -> None:
        nxt = str(link(await data.search("Observation", _count="2"), "next"))
        cursor = parse_qs(urlsplit(nxt).query)["_cursor"][0]
        payload, mac = cursor.split(".")
        await data.error(400, "/fhir/Observation", _cursor=payload[:-3] + "xyz." + mac)
        await data.error(400, "/fhir/DiagnosticReport", _cursor=cursor)  # another type
        await data.error(400, "/fhir/Observation", _cursor=cursor, code="718-7")


class TestInclude:
    async def test_include_the_reports_observations(self, data: Data) -> None:
        bundle = await data.search(
            "DiagnosticReport", _include="DiagnosticReport:result", date="2026-05-18"
        )
        valid(bundle)
        (report,) = resources(bundle)
        included = resources(bundle, "include")
        assert [f"Observation/{o['id']}" for o in included] == [
            r["reference"] for r in report["result"]
        ]
        assert {o["code"]["coding"][0]["code"] for o in included} == {"718-7", "777-3"}
        assert bundle["total"] == 1  # includes are not counted
        # Included resources read back by their id.
        for o in included:
            assert (await data.get(f"/fhir/Observation/{o['id']}")) == o


class TestRead:
    async def test_read_by_the_result_id_a_check_links_to(
        self, container: Container, data: Data
    ) -> None:
        reports = await result_ids(container, "DiagnosticReport")
        studies = await result_ids(container, "ImagingStudy")
        report = await data.get(f"/fhir/DiagnosticReport/{reports['ACC-6']}")
        valid(report)
        assert report["id"] == reports["ACC-6"] and report["meta"]["source"] == "H002"
        assert report["subject"] == {"reference": f"Patient/{data.pid}"}
        (study_id,) = studies.values()
        study = await data.get(f"/fhir/ImagingStudy/{study_id}")
        assert study["id"] == study_id and study["resourceType"] == "ImagingStudy"
        # A study's id is not a report's.
        await data.error(404, f"/fhir/DiagnosticReport/{study_id}")
        body = await data.error(404, "/fhir/Observation/no-such-id")
        assert body["issue"][0]["code"] == "not-found"

    async def test_a_read_before_any_search_indexes_on_the_way(
        self, container: Container, api: httpx.AsyncClient
    ) -> None:
        await index(container, (f.lab_bundle(accession="ACC-R"), "H001"))
        rid = (await result_ids(container, "DiagnosticReport"))["ACC-R"]
        r = await api.get(
            f"/fhir/DiagnosticReport/{rid}", headers=await bearer(container, "doctor", "H001")
        )
        assert r.status_code == 200 and r.json()["id"] == rid

    async def test_a_new_version_is_served_at_once(self, container: Container, data: Data) -> None:
        rid = (await result_ids(container, "DiagnosticReport"))["ACC-1"]
        before = await data.get(f"/fhir/DiagnosticReport/{rid}")
        amended = f.lab_bundle(
            accession="ACC-1",
            status="amended",
            last_updated="2026-06-01T12:00:00+08:00",
            version="2",
            hb=9.9,
            effective=LABS[0][2],
        )
        await index(container, (amended, "H001"))
        after = await data.get(f"/fhir/DiagnosticReport/{rid}")
        assert (before["status"], after["status"]) == ("final", "amended")
        assert after["result"] == before["result"]  # the observations keep their ids
        hb = await data.get(f"/fhir/{after['result'][0]['reference']}")
        assert hb["valueQuantity"]["value"] == 9.9
        assert after["meta"]["lastUpdated"] > before["meta"]["lastUpdated"]

    async def test_entered_in_error_is_gone_and_left_out_of_searches(
        self, container: Container, data: Data
    ) -> None:
        rid = (await result_ids(container, "DiagnosticReport"))["ACC-2"]
        withdrawn = f.lab_bundle(
            accession="ACC-2",
            status="entered-in-error",
            last_updated="2026-06-02T12:00:00+08:00",
            version="2",
            effective=LABS[1][2],
        )
        await index(container, (withdrawn, "H001"))
        body = await data.error(410, f"/fhir/DiagnosticReport/{rid}")
        assert body["issue"][0]["code"] == "deleted"
        assert "entered-in-error" in body["issue"][0]["diagnostics"]
        assert rid not in ids(await data.search("DiagnosticReport"))
        asked = await data.search("DiagnosticReport", status="entered-in-error")
        assert ids(asked) == [rid]


class TestIndexUpkeep:
    async def test_concurrent_first_searches_both_answer(
        self, container: Container, api: httpx.AsyncClient
    ) -> None:
        await index(container, *((f.lab_bundle(accession=f"ACC-C{i}"), "H001") for i in range(4)))
        doctor = await bearer(container, "doctor", "H001")
        answers = await asyncio.gather(
            *(
                api.get("/fhir/Observation", params={"subject:identifier": A}, headers=doctor)
                for _ in range(3)
            )
        )
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert {r.json()["total"] for r in answers} == {8}

    async def test_a_payload_that_cannot_be_opened_spoils_nothing_else(
        self, container: Container, api: httpx.AsyncClient
    ) -> None:
        await index(
            container,
            (f.lab_bundle(accession="ACC-OK"), "H001"),
            (f.lab_bundle(accession="ACC-BAD"), "H001"),
        )
        bad = (await result_ids(container, "DiagnosticReport"))["ACC-BAD"]
        async with container.sessions() as s, s.begin():
            pid = (
                await s.execute(
                    select(result_version.c.payload_id).where(result_version.c.result_id == bad)
                )
            ).scalar_one()
            await s.execute(
                update(payload).where(payload.c.id == pid).values(ciphertext=b"garbage" * 4)
            )
        doctor = await bearer(container, "doctor", "H001")
        # The index was written at ingest: the first search meets the damaged payload,
        # serves the others, and marks its rows unreadable so no later search finds it.
        for _ in range(2):
            r = await api.get(
                "/fhir/DiagnosticReport", params={"subject:identifier": A}, headers=doctor
            )
            assert r.status_code == 200
            reports = resources(r.json())
            assert [rep["identifier"][0]["value"] for rep in reports] == ["ACC-OK"]
        assert r.json()["total"] == 1
        missing = await api.get(f"/fhir/DiagnosticReport/{bad}", headers=doctor)
        assert missing.status_code == 404


class TestHandling:
    async def test_unknown_parameters_are_ignored_and_reported(self, data: Data) -> None:
        bundle = await data.search("Observation", performer="Practitioner/1", code=HB)
        assert bundle["total"] == 7
        (outcome,) = resources(bundle, "outcome")
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "warning"
        assert "performer" in outcome["issue"][0]["diagnostics"]
        valid(bundle)

    async def test_strict_handling_refuses_them(self, data: Data) -> None:
        strict = {**data.doctor, "Prefer": "handling=strict"}
        r = await data.api.get(
            "/fhir/Observation",
            params={"patient": data.pid, "performer": "Practitioner/1"},
            headers=strict,
        )
        assert r.status_code == 400 and r.headers["content-type"] == FHIR_JSON
        assert r.json()["issue"][0]["code"] == "not-supported"
        ok = await data.api.get(
            "/fhir/Observation", params={"patient": data.pid, "code": HB}, headers=strict
        )
        assert ok.status_code == 200 and ok.json()["total"] == 7


class TestRefusals:
    async def test_errors_are_operation_outcomes_with_the_right_status(self, data: Data) -> None:
        body = await data.error(401, "/fhir/Observation", patient=data.pid, headers={})
        assert body["issue"][0]["code"] == "login"
        r = await data.api.get("/fhir/Observation", params={"patient": data.pid})
        assert r.headers["www-authenticate"] == "Bearer"
        await data.error(
            401, "/fhir/Observation", patient=data.pid, headers={"Authorization": "Bearer x.y.z"}
        )
        finance = await bearer(data.container, "finance", "H002")
        body = await data.error(403, "/fhir/Observation", patient=data.pid, headers=finance)
        assert "doctor" in body["issue"][0]["diagnostics"]
        body = await data.error(403, "/fhir/Observation", code=HB)
        assert "one named patient" in body["issue"][0]["diagnostics"]
        await data.error(403, "/fhir/Observation", patient=f"{data.pid},other")
        await data.error(400, "/fhir/Observation", patient=data.pid, _count="many")
        await data.error(400, "/fhir/Observation", patient=data.pid, **{"code:text": "Hb"})
        await data.error(404, "/fhir/Medication", patient=data.pid)
        await data.error(404, f"/fhir/Patient/{data.pid}/_history")
        await data.error(405, "/fhir/Observation", method="POST")
        await data.error(405, f"/fhir/Observation/{data.pid}", method="DELETE")
        await data.error(406, "/fhir/Observation", patient=data.pid, _format="xml")
        await data.error(400, "/fhir/Observation", headers={**data.doctor, "X-Purpose-Of-Use": "x"})

    async def test_another_patients_results_are_never_in_the_answer(self, data: Data) -> None:
        b = await data.get("/fhir/Patient", identifier=B)
        other = ids(b)[0]
        theirs = await data.search("DiagnosticReport", patient=other)
        assert theirs["total"] == 1
        mine = await data.search("DiagnosticReport")
        assert not set(ids(theirs)) & set(ids(mine))


class TestAudit:
    async def test_every_read_and_search_is_audited_without_identifiers(
        self, container: Container, data: Data
    ) -> None:
        reports = await result_ids(container, "DiagnosticReport")
        headers = {**data.doctor, "X-Purpose-Of-Use": "ETREAT"}
        await data.api.get(f"/fhir/DiagnosticReport/{reports['ACC-5']}", headers=headers)
        await data.api.get(
            "/fhir/Observation", params={"subject:identifier": A, "code": HB}, headers=headers
        )
        async with container.sessions() as s:
            rows = (await s.execute(select(audit_event).order_by(audit_event.c.id))).all()
        fhir_rows = [r for r in rows if r.action.startswith("fhir-")]
        # The fixture's Patient search, then the read and the search above.
        assert [r.action for r in fhir_rows] == ["fhir-search", "fhir-read", "fhir-search"]
        first, read, search = fhir_rows
        national = normalise(f.NATIONAL, f.PATIENT_A, hospital="H002")
        assert national is not None
        assert first.patient_pseudonym == data.container.pseudonyms.of(national)
        assert (read.purpose, search.purpose) == ("emergency-treatment", "emergency-treatment")
        assert first.purpose == "treatment"
        for r in fhir_rows:
            assert (r.actor, r.role, r.hospital_id, r.person_id) == (
                "dr.li",
                "doctor",
                "H002",
                data.pid,
            )
            assert f.PATIENT_A not in json.dumps(r.detail)
        assert read.detail["resource"] == f"DiagnosticReport/{reports['ACC-5']}"
        assert search.detail["total"] == 7 and search.detail["resource_type"] == "Observation"


class TestRealSamples:
    """HL7's own R4 examples, as a hospital (H001) would send them."""

    FILES = (
        "Patient-f001.json",
        "Patient-example.json",
        "Patient-dicom.json",
        "Patient-pat2.json",
        "Observation-f001.json",
        "Observation-f002.json",
        "Observation-f004.json",
        "Observation-f005.json",
        "Observation-unsat.json",
        "Observation-example.json",
        "DiagnosticReport-ultrasound.json",
        "DiagnosticReport-102.json",
        "Bundle-lipids.json",
        "ImagingStudy-example.json",
        "ImagingStudy-example-xr.json",
    )

    @pytest.fixture
    async def samples(self, realdata: Path, container: Container, api: httpx.AsyncClient) -> Data:
        folder = realdata / "fhir" / "r4-spec"
        await index(container, *((folder.joinpath(n).read_bytes(), "H001") for n in self.FILES))
        return Data(container, api, await bearer(container, "doctor", "H001"), "")

    async def _pid(self, data: Data, identifier: str) -> str:
        bundle = await data.get("/fhir/Patient", identifier=identifier)
        assert bundle["total"] == 1
        valid(bundle)
        return str(ids(bundle)[0])

    async def test_observations_with_periods(self, samples: Data) -> None:
        data = samples
        data.pid = await self._pid(data, "urn:oid:2.16.840.1.113883.2.4.6.3|738472983")
        bundle = await data.search("Observation")
        valid(bundle)
        assert bundle["total"] == 4  # f001 (now cancelled by Observation-unsat), f002/4/5
        statuses = sorted(o["status"] for o in resources(bundle))
        assert statuses == ["cancelled", "final", "final", "final"]
        for o in resources(bundle):
            assert o["subject"]["reference"] == f"Patient/{data.pid}"
            assert o["subject"]["display"] == "P. van de Heuvel"  # kept as sent
            assert o["meta"]["source"] == "H001"
            assert "reference" not in o["performer"][0]  # a Practitioner mrb doesn't serve

        async def codes(**params: str) -> set[str]:
            found = await data.search("Observation", **params)
            return {o["code"]["coding"][0]["code"] for o in resources(found)}

        assert len(await codes(date="2013-04")) == 4
        assert await codes(date="2013-04-05") == {"718-7"}  # a day contains only f005
        assert await codes(date="sa2013-04-03") == {"718-7"}
        assert len(await codes(date="gt2013-04-03")) == 4
        assert await codes(date="eb2013-04-05") == set()
        # f002 ends at 10:30:10 (+01:00); f005 is that second exactly.
        assert await codes(date="ge2013-04-05T10:30:10+01:00") == {"718-7"}
        assert await codes(date="lt2013-04-02T10:30:10+01:00") == {"15074-8"}
        assert await codes(code=HB) == {"718-7"}

    async def test_reports_with_include_studies_and_reads(self, samples: Data) -> None:
        data = samples
        data.pid = await self._pid(data, "urn:oid:0.1.2.3.4.5.6.7|123456")  # pat2
        bundle = await data.search("DiagnosticReport", _include="DiagnosticReport:result")
        valid(bundle)
        assert bundle["total"] == 2  # the lipid panel and DiagnosticReport-102
        lipids = next(r for r in resources(bundle) if r["code"]["coding"][0]["code"] == "24331-1")
        included = resources(bundle, "include")
        assert sorted(f"Observation/{o['id']}" for o in included) == sorted(
            r["reference"] for r in lipids["result"]
        )
        assert len(included) == 4
        read = await data.get(f"/fhir/DiagnosticReport/{lipids['id']}")
        assert read == lipids

        data.pid = await self._pid(data, "http://nema.org/examples/patients|MINT1234")
        studies = await data.search("ImagingStudy", _sort="started")
        assert [s["started"][:4] for s in resources(studies)] == ["2011", "2017"]
        for s in resources(studies):
            valid(s)
            assert (await data.get(f"/fhir/ImagingStudy/{s['id']}")) == s
        assert (await data.search("ImagingStudy", modality="DX"))["total"] == 1
        assert (await data.search("ImagingStudy", started="ge2015"))["total"] == 1
        wrist = await data.search("ImagingStudy", bodysite=f"{f.SNOMED}|T-15460")
        assert wrist["total"] == 1

        data.pid = await self._pid(data, "urn:oid:1.2.36.146.595.217.0.1|12345")
        weight = await data.search("Observation", code=f"{f.SNOMED}|27113001")
        (obs,) = resources(weight)
        valid(obs)
        assert obs["valueQuantity"]["value"] == 185  # the hospital's JSON, as sent
        us = await data.search("DiagnosticReport", date="2012-12-01")
        assert us["total"] == 1


async def test_the_index_tables_match_their_migration(db: Db) -> None:
    """Migration 0005_fhir creates exactly the tables broker.storage.fhir_tables declares."""
    engine = create_engine(db.url, schema=db.schema)

    def diff(conn: Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
        return [d for d in found if "fhir_" in str(d)]

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"fhir_resource", "fhir_token"} <= tables
        assert {fhir_tables.fhir_resource.name, fhir_tables.fhir_token.name} <= set(metadata.tables)
    finally:
        await engine.dispose()
