"""A study sent with its endpoints, through the real ingest service and the real API
(SQLite and PostgreSQL): the FHIR facade serves the ImagingStudy with `endpoint`
references and each Endpoint by id (audited, doctors only); an unusable endpoint is left
out with a warning in the receipt's detail; the recognition check links the images."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from sqlalchemy import select

from broker.bootstrap import Container
from broker.domain.registry import Certification, CertifyingBody
from broker.ingest.service import Outcome
from broker.storage import hospitals
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer
from tests.integration.test_fhir_api import api, with_fhir  # noqa: F401 - the fixture
from tests.unit.test_imaging_endpoints import UID, VIEWER, WADO, endpoint, imaging_with_endpoints

A = f"{f.NATIONAL}|{f.PATIENT_A}"
FHIR_JSON = "application/fhir+json"
STARTED = "2026-05-10T09:00:00+08:00"


async def ingest(container: Container, value: bytes) -> Any:
    (processed,) = await container.ingest_service().process_batch([f.inbound(value, "H001")])
    assert processed.outcome is Outcome.INDEXED, processed.detail
    return processed


async def test_a_study_with_endpoints_is_served_with_them(
    container: Container,
    api: httpx.AsyncClient,  # noqa: F811
) -> None:
    value = imaging_with_endpoints(
        bundled=[endpoint(VIEWER, "ihe-iid", eid="iid")],
        contained=[
            endpoint(WADO, eid="wado"),
            endpoint("javascript:alert(1)", "ihe-iid", eid="bad"),
        ],
        started=STARTED,
    )
    processed = await ingest(container, value)
    # The bad endpoint is left out, the result indexed, and the hospital told why.
    assert processed.detail is not None and "ImagingStudy.endpoint[1]" in processed.detail
    assert "alert" not in processed.detail  # the scheme is named, never the URL

    doctor = await bearer(container, "doctor", "H002", "dr.li")
    found = await api.get(
        "/fhir/ImagingStudy",
        params={"subject:identifier": A, "_include": "ImagingStudy:endpoint"},
        headers=doctor,
    )
    assert found.status_code == 200, found.text
    entries = found.json()["entry"]
    (study,) = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
    included = {e["resource"]["id"]: e for e in entries if e["search"]["mode"] == "include"}
    refs = [r["reference"] for r in study["endpoint"]]
    assert len(refs) == 2 and all(r.startswith("Endpoint/") for r in refs)
    assert "contained" not in study and "javascript" not in found.text
    assert {r.removeprefix("Endpoint/") for r in refs} == set(included)
    assert all(e["fullUrl"].startswith("http://mrb.test/fhir/Endpoint/") for e in included.values())

    addresses = set()
    for ref in refs:
        read = await api.get(f"/fhir/{ref}", headers=doctor)
        assert read.status_code == 200, read.text
        assert read.headers["content-type"].startswith(FHIR_JSON)
        served = read.json()
        assert served["resourceType"] == "Endpoint" and f"Endpoint/{served['id']}" == ref
        assert served["meta"]["source"] == "H001"
        addresses.add(served["address"])
    assert addresses == {VIEWER, WADO}

    # Read like any result: audited, doctors only, nothing else under /fhir/Endpoint.
    async with container.sessions() as s:
        audited = (
            await s.execute(select(audit_event.c.detail).where(audit_event.c.action == "fhir-read"))
        ).scalars()
        assert {d["resource"] for d in audited} >= set(refs)
    finance = await bearer(container, "finance", "H002", "fin")
    assert (await api.get(f"/fhir/{refs[0]}", headers=finance)).status_code == 403
    assert (await api.get(f"/fhir/{refs[0]}")).status_code == 401
    missing = await api.get("/fhir/Endpoint/00000000-0000-0000-0000-000000000000", headers=doctor)
    assert missing.status_code == 404
    search = await api.get("/fhir/Endpoint", params={"patient": "x"}, headers=doctor)
    assert search.status_code == 404 and "read by id only" in search.text
    assert (await api.put(f"/fhir/{refs[0]}", headers=doctor, json={})).status_code == 405

    metadata = (await api.get("/fhir/metadata")).json()
    (ep,) = [r for r in metadata["rest"][0]["resource"] if r["type"] == "Endpoint"]
    assert [i["code"] for i in ep["interaction"]] == ["read"]
    (img,) = [r for r in metadata["rest"][0]["resource"] if r["type"] == "ImagingStudy"]
    assert img["searchInclude"] == ["ImagingStudy:endpoint"]


async def test_the_recognition_check_links_the_images(
    container: Container,
    api: httpx.AsyncClient,  # noqa: F811
) -> None:
    async with container.sessions() as s, s.begin():
        cert = Certification(
            "H001", "CT", CertifyingBody.PROVINCIAL_IMAGING_QC, date(2025, 1, 1), date(2035, 1, 1)
        )
        await hospitals.certify(s, cert, reference=None)
    await ingest(
        container,
        imaging_with_endpoints(bundled=[endpoint(VIEWER, "ihe-iid")], started=STARTED),
    )
    doctor = await bearer(container, "doctor", "H002", "dr.li")
    body = {
        "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
        "ordering_hospital": "H002",
        "order_time": "2026-05-12T09:00:00+08:00",
        "items": [
            {
                "modality": "CT",
                "body_site": {"system": "http://snomed.info/sct", "code": "51185008"},
            }
        ],
    }
    answer = await api.post("/api/v1/recognition/check", json=body, headers=doctor)
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()["items"]
    refs = [r for r in [item["candidate"], *item["other_results"]] if r]
    assert refs, item
    assert {r["images"] for r in refs} == {f"{VIEWER}?requestType=STUDY&studyUID={UID}"}
    assert "/fhir/ImagingStudy/" in refs[0]["fhir"]


async def test_a_study_without_endpoints_has_no_images_link(
    container: Container,
    api: httpx.AsyncClient,  # noqa: F811
) -> None:
    processed = await ingest(container, f.imaging_bundle(started=STARTED))
    assert processed.detail is None
    doctor = await bearer(container, "doctor", "H002", "dr.li")
    found = await api.get(
        "/fhir/ImagingStudy",
        params={"subject:identifier": A, "_include": "ImagingStudy:endpoint"},
        headers=doctor,
    )
    entries = found.json()["entry"]
    assert [e["search"]["mode"] for e in entries] == ["match"]
    assert "endpoint" not in entries[0]["resource"]
