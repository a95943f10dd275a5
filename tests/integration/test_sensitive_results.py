"""Sensitive results through the real paths (issue "Patient rights"), on SQLite and
PostgreSQL: an HIV antibody result ingested at H001 is invisible to H002's doctor through
checks, /fhir and CDS patient-view — every answer is identical with and without it — while
H001's own doctor still reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from tests import factories as f
from tests.conftest import bearer, certify
from tests.integration.test_fhir_api import with_fhir

MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
HIV = Order(system=f.LOINC, code="56888-1")  # LAB-ANTI-HIV
HB = Order(system=f.LOINC, code="718-7")  # LAB-HGB: not sensitive
DR_H002 = Actor("dr-li", Role.DOCTOR, "H002")
INCLUDE = "DiagnosticReport:result"
NOBODY = "00000000-0000-4000-8000-000000000000"


def hiv_bundle(accession: str, *, with_hb: bool) -> bytes:
    """A report from H001 holding an HIV antibody result (and, if asked, a haemoglobin)."""
    hiv = f.observation(f"hiv-{accession}", "56888-1", 0.12, "S/CO")
    observations = [hiv] + ([f.observation(f"hb-{accession}", "718-7", 13.1)] if with_hb else [])
    report = {
        "resourceType": "DiagnosticReport",
        "id": f"dr-{accession}",
        "identifier": [{"system": "urn:lab:H001", "value": accession}],
        "status": "final",
        "code": {"coding": [{"system": f.LOINC, "code": "56888-1"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": hiv["effectiveDateTime"],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
    }
    entries = [("urn:uuid:patient", f.patient()), ("urn:uuid:dr", report)]
    entries += [(f"urn:uuid:{o['id']}", o) for o in observations]
    return f.bundle(entries)


async def index(c: Container, value: bytes, hospital: str = "H001") -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


@pytest.fixture
async def world(container: Container) -> Container:
    """H001 is certified for both items: without the rule, its results would be recognised."""
    for scope in ("HEMATOLOGY", "IMMUNOLOGY"):
        await certify(container, "H001", scope)
    await index(container, f.lab_bundle(accession="CBC-1"), "H002")  # the patient is known
    return container


@pytest.fixture
async def api(world: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=with_fhir(create_app(world)))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


async def check(c: Container, *orders: Order, patient: str = f.PATIENT_A) -> list[Any]:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, patient, "H002", MAY_20, orders),
        DR_H002,
    )
    return [a.decision for a in answer.items]  # no check id: it differs per check


def comparable(bundle: dict[str, Any]) -> dict[str, Any]:
    """A searchset without what differs per request (its id, time and signed cursors)."""
    return {
        "total": bundle.get("total"),
        "entry": bundle.get("entry", []),
        "links": sorted(link["relation"] for link in bundle.get("link", [])),
    }


async def fhir(api: httpx.AsyncClient, doctor: dict[str, str], path: str, **q: str) -> Any:
    r = await api.get(path, params=q or None, headers=doctor)
    return r.status_code, (r.json() if r.status_code != 200 else comparable(r.json()))


class TestChecks:
    async def test_the_hiv_item_and_another_are_answered_alike_with_and_without_it(
        self, world: Container
    ) -> None:
        before = await check(world, HIV, HB)
        await index(world, hiv_bundle("HIV-1", with_hb=True))
        after = await check(world, HIV, HB)
        assert after == before
        assert before[0].decision.value == "EXCLUDED"
        assert "敏感项目" in before[0].explanation.zh and before[0].candidate is None

    async def test_the_issuing_hospital_uses_its_own_sensitive_result(
        self, world: Container
    ) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        answer = await run_check(
            world.check_uow(),
            world.rules_provider(),
            CheckRequest(f.NATIONAL, f.PATIENT_A, "H001", MAY_20, (HIV,)),
            Actor("dr-zhao", Role.DOCTOR, "H001"),
        )
        (item,) = answer.items
        assert item.decision.decision.value == "RECOGNIZABLE"
        assert item.decision.candidate is not None and item.decision.candidate.hospital == "H001"


class TestFhir:
    async def test_search_include_and_read_are_identical_with_and_without_it(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        a = f"{f.NATIONAL}|{f.PATIENT_A}"
        queries = [
            ("/fhir/DiagnosticReport", {"subject:identifier": a, "_include": INCLUDE}),
            ("/fhir/Observation", {"subject:identifier": a}),
            ("/fhir/Observation", {"subject:identifier": a, "code": f"{f.LOINC}|56888-1"}),
            ("/fhir/Patient", {"identifier": a}),
        ]
        before = [await fhir(api, doctor, p, **q) for p, q in queries]
        missing = await fhir(api, doctor, f"/fhir/DiagnosticReport/{NOBODY}")
        await index(world, hiv_bundle("HIV-1", with_hb=True))
        after = [await fhir(api, doctor, p, **q) for p, q in queries]
        assert after == before
        assert before[0][0] == 200 and before[0][1]["total"] == 1  # H002's own CBC only

        own = await bearer(world, "doctor", "H001", "dr.zhao")
        status, found = await fhir(api, own, "/fhir/DiagnosticReport", **dict(queries[0][1]))
        ids = [
            e["resource"]["id"]
            for e in found["entry"]
            if e["search"]["mode"] == "match" and e["resource"]["meta"]["source"] == "H001"
        ]
        assert status == 200 and len(ids) == 1  # the issuing hospital sees its own
        assert (await api.get(f"/fhir/DiagnosticReport/{ids[0]}", headers=own)).status_code == 200
        hidden = await fhir(api, doctor, f"/fhir/DiagnosticReport/{ids[0]}")
        assert hidden[0] == missing[0] == 404
        assert hidden[1] == missing[1]

    async def test_a_patient_known_only_through_a_sensitive_result_is_unknown(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        b = f"{f.NATIONAL}|{f.PATIENT_B}"
        before = await fhir(api, doctor, "/fhir/Patient", identifier=b)
        value = hiv_bundle("HIV-B", with_hb=False).replace(
            f.PATIENT_A.encode(), f.PATIENT_B.encode()
        )
        await index(world, value)
        assert await fhir(api, doctor, "/fhir/Patient", identifier=b) == before
        assert before[1]["total"] == 0
