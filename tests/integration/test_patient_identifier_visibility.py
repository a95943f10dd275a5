"""Who sees which patient identifiers through /fhir, on SQLite and PostgreSQL.

Patient A has results from H001 (its MRN-1 and the resident ID) and H002 (its H2-77 and
the resident ID). A doctor sees the resident ID and their own hospital's MRN, never the
other hospital's: in Patient read and search, in every result's subject (read, search,
`_include`), in a reference to the patient anywhere in a result and in a contained
Patient.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.ingest.service import Outcome
from broker.storage.tables import result
from tests import factories as f
from tests.conftest import bearer

H1_MRN_SYSTEM = "urn:oid:2.16.156.10011.0.1.mrn"  # the factories' default MRN system
H1_MRN, H2_MRN = "MRN-1", "H2-77"
A = f"{f.NATIONAL}|{f.PATIENT_A}"
RESIDENT = (f.NATIONAL, f.PATIENT_A)
MINE = {"H001": (H1_MRN_SYSTEM, H1_MRN), "H002": ("urn:h2:mrn", H2_MRN)}
THEIRS = {"H001": H2_MRN, "H002": H1_MRN}


def h1_lab() -> bytes:
    """H001's panel, its report's subject and one Observation's naming the patient by MRN
    too, and that Observation holding a contained copy of the Patient."""
    doc = json.loads(f.lab_bundle(accession="ACC-H1"))
    mrn = {"system": H1_MRN_SYSTEM, "value": H1_MRN}
    for entry in doc["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("DiagnosticReport", "Observation"):
            res["subject"] = {"reference": "urn:uuid:patient", "identifier": mrn}
        if res.get("id") == "hb":
            # Its narrative spells the MRN out: it goes with the identifiers.
            div = f'<div xmlns="http://www.w3.org/1999/xhtml">{H1_MRN}</div>'
            res["contained"] = [
                {**f.patient(pid="cp"), "text": {"status": "generated", "div": div}}
            ]
            res["focus"] = [{"reference": "#cp", "identifier": mrn}]
    return json.dumps(doc).encode()


def h2_patient() -> dict[str, Any]:
    return f.patient(mrn=H2_MRN, mrn_system="urn:h2:mrn", pid="h2p")


@dataclass
class World:
    api: httpx.AsyncClient
    doctors: dict[str, dict[str, str]]
    pid: str
    reports: dict[str, str]  # hospital -> its DiagnosticReport's result id
    study: str  # H002's ImagingStudy result id

    async def get(self, hospital: str, path: str, **params: Any) -> dict[str, Any]:
        r = await self.api.get(path, params=params or None, headers=self.doctors[hospital])
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        get_fhir_model_class(body["resourceType"]).model_validate(body)
        return body


@pytest.fixture
async def world(container: Container) -> AsyncIterator[World]:
    processed = await container.ingest_service().process_batch(
        [
            f.inbound(h1_lab(), "H001"),
            f.inbound(f.lab_bundle(accession="ACC-H2", pat=h2_patient()), "H002"),
            f.inbound(f.imaging_bundle(pat=h2_patient()), "H002"),
        ]
    )
    assert [p.outcome for p in processed] == [Outcome.INDEXED] * 3, [p.detail for p in processed]
    async with container.sessions() as s:
        rows = (
            await s.execute(select(result.c.id, result.c.hospital_id, result.c.resource_type))
        ).all()
    reports = {r.hospital_id: r.id for r in rows if r.resource_type == "DiagnosticReport"}
    (study,) = [r.id for r in rows if r.resource_type == "ImagingStudy"]
    doctors = {
        "H001": await bearer(container, "doctor", "H001", "dr.wang"),
        "H002": await bearer(container, "doctor", "H002", "dr.li"),
    }
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as api:
        found = await api.get("/fhir/Patient", params={"identifier": A}, headers=doctors["H001"])
        pid = found.json()["entry"][0]["resource"]["id"]
        yield World(api, doctors, pid, reports, study)


def pairs(patient: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["system"], i["value"]) for i in patient.get("identifier", [])}


@pytest.mark.parametrize("hospital", ["H001", "H002"])
async def test_the_patient_shows_the_resident_id_and_the_callers_own_mrn_only(
    world: World, hospital: str
) -> None:
    expected = {RESIDENT, MINE[hospital]}
    search = await world.get(hospital, "/fhir/Patient", identifier=A)
    (patient,) = [e["resource"] for e in search["entry"]]
    assert pairs(patient) == expected
    assert pairs(await world.get(hospital, f"/fhir/Patient/{world.pid}")) == expected
    by_id = await world.get(hospital, "/fhir/Patient", _id=world.pid)
    assert pairs(by_id["entry"][0]["resource"]) == expected
    for body in (search, by_id):
        assert THEIRS[hospital] not in json.dumps(body)


@pytest.mark.parametrize("hospital", ["H001", "H002"])
async def test_results_name_the_patient_only_by_what_the_caller_may_see(
    world: World, hospital: str
) -> None:
    served = [
        await world.get(
            hospital,
            "/fhir/DiagnosticReport",
            patient=world.pid,
            _include="DiagnosticReport:result",
        ),
        await world.get(hospital, "/fhir/Observation", patient=world.pid),
        await world.get(hospital, "/fhir/ImagingStudy", patient=world.pid),
        await world.get(hospital, f"/fhir/DiagnosticReport/{world.reports['H001']}"),
        await world.get(hospital, f"/fhir/DiagnosticReport/{world.reports['H002']}"),
        await world.get(hospital, f"/fhir/ImagingStudy/{world.study}"),
    ]
    for body in served:
        assert THEIRS[hospital] not in json.dumps(body)
    bundle = served[0]
    assert {e["search"]["mode"] for e in bundle["entry"]} == {"match", "include"}
    h1 = [
        e["resource"]
        for e in bundle["entry"] + served[1]["entry"]
        if e["resource"]["meta"]["source"] == "H001"
    ]
    assert h1, "H001's report and observations are served to both hospitals"
    for res in h1:
        assert res["subject"]["reference"] == f"Patient/{world.pid}"
        if hospital == "H001":  # its own payload, as it sent it
            assert res["subject"]["identifier"]["value"] == H1_MRN
        else:
            assert "identifier" not in res["subject"]
    with_contained = [r for r in h1 if r.get("contained")]
    assert len(with_contained) == 2  # the haemoglobin: included, and found by its search
    for hb in with_contained:
        (contained,) = hb["contained"]
        own = hospital == "H001"
        assert pairs(contained) == ({RESIDENT, MINE["H001"]} if own else {RESIDENT})
        assert ("text" in contained) is own
        assert ("identifier" in hb["focus"][0]) is own
        assert hb["focus"][0]["reference"] == "#cp"


async def test_a_national_identifier_is_shown_once_however_each_hospital_spelled_it(
    container: Container, world: World
) -> None:
    # H002 sends the resident ID under an alias of its system (身份证号 column "sfzh").
    spelled = f.patient(mrn=H2_MRN, mrn_system="urn:h2:mrn", pid="h2p")
    spelled["identifier"][0]["system"] = "sfzh"
    (p,) = await container.ingest_service().process_batch(
        [f.inbound(f.lab_bundle(accession="ACC-H2B", pat=spelled), "H002")]
    )
    assert p.outcome == Outcome.INDEXED, p.detail
    patient = await world.get("H002", f"/fhir/Patient/{world.pid}")
    values = [i["value"] for i in patient["identifier"]]
    assert sorted(values) == sorted([f.PATIENT_A, H2_MRN])
