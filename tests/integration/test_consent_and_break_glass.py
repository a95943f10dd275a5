"""Consent, opt-out, purposes of use and break-glass through the real paths (issue
"Patient rights"), on SQLite and PostgreSQL: a consent reveals a sensitive result to
another hospital until withdrawn or expired; an opt-out hides everything of the patient
from other hospitals (the same answers as without their results) while the issuing hospital
still sees its own; an emergency with a reason breaks the glass (flagged, counted,
reported), one without a reason does not; an unknown purpose is 400; /fhir/Consent is the
patient's own hospitals' to read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.consent import ConsentKind, ConsentRecord
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from broker.services.consents import NewConsent
from broker.storage.consent_tables import patient_consent
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer, certify, seed_hospitals
from tests.integration.test_fhir_api import with_fhir
from tests.integration.test_sensitive_results import HB, HIV, MAY_20, hiv_bundle, index

DR_ZHAO = Actor("dr.zhao", Role.DOCTOR, "H001")  # the issuing hospital's doctor
DR_LI = Actor("dr.li", Role.DOCTOR, "H002")  # another hospital's
A = f"{f.NATIONAL}|{f.PATIENT_A}"
HIV_CODE = f"{f.LOINC}|56888-1"


@pytest.fixture
async def world(container: Container) -> Container:
    """H001 certified for both items; H002 holds a CBC of the patient (so knows them)."""
    for scope in ("HEMATOLOGY", "IMMUNOLOGY"):
        await certify(container, "H001", scope)
    await seed_hospitals(container, "H003")
    await index(container, f.lab_bundle(accession="CBC-1"), "H002")
    return container


@pytest.fixture
async def api(world: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=with_fhir(create_app(world)))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


async def check(c: Container, *orders: Order, actor: Actor = DR_LI, **kw: Any) -> list[Any]:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, actor.hospital, MAY_20, orders, **kw),
        actor,
        consents=c.consent_reader(),
    )
    return [a.decision for a in answer.items]


async def consent(c: Container, kind: ConsentKind, **kw: Any) -> ConsentRecord:
    new = NewConsent(f.NATIONAL, f.PATIENT_A, kind, "FORM-2026-001", **kw)
    return await c.consent_service().record(DR_ZHAO, new)


def in_a_year() -> datetime:
    return datetime.now(UTC) + timedelta(days=365)


async def search(api: httpx.AsyncClient, doctor: dict[str, str], path: str, **q: str) -> Any:
    r = await api.get(path, params=q, headers=doctor)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"total": body["total"], "entry": body.get("entry", [])}


class TestConsent:
    async def test_granted_then_withdrawn_reveals_then_hides_on_the_next_request(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        hidden = await check(world, HIV)
        before = await search(api, doctor, "/fhir/Observation", **{"subject:identifier": A})
        assert hidden[0].decision.value == "EXCLUDED" and hidden[0].candidate is None

        given = await consent(world, ConsentKind.SENSITIVE, category="HIV", expires_at=in_a_year())
        (shown,) = await check(world, HIV)
        assert shown.candidate is not None and shown.candidate.hospital == "H001"
        found = await search(
            api, doctor, "/fhir/Observation", **{"subject:identifier": A, "code": HIV_CODE}
        )
        assert found["total"] == 1

        await world.consent_service().withdraw(DR_ZHAO, given.id)
        assert await check(world, HIV) == hidden
        after = await search(api, doctor, "/fhir/Observation", **{"subject:identifier": A})
        assert after == before

    async def test_an_expired_consent_hides_again(self, world: Container) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        hidden = await check(world, HIV)
        given = await consent(world, ConsentKind.SENSITIVE, category="HIV", expires_at=in_a_year())
        assert (await check(world, HIV))[0].candidate is not None
        async with world.sessions() as s, s.begin():
            await s.execute(
                update(patient_consent)
                .where(patient_consent.c.id == given.id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert await check(world, HIV) == hidden

    async def test_stored_by_person_id_only(self, world: Container) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        await consent(world, ConsentKind.OPT_OUT)
        async with world.sessions() as s:
            rows = [dict(r._mapping) for r in await s.execute(select(patient_consent))]
        assert len(rows) == 1
        assert f.PATIENT_A not in repr(rows)


class TestOptOut:
    async def test_other_hospitals_see_nothing_and_the_issuer_its_own(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        queries = [
            ("/fhir/DiagnosticReport", {"subject:identifier": A}),
            ("/fhir/Observation", {"subject:identifier": A}),
            ("/fhir/Patient", {"identifier": A}),
        ]
        without = await check(world, HB, HIV)
        fhir_without = [await search(api, doctor, p, **q) for p, q in queries]
        await index(world, f.lab_bundle(accession="CBC-H1"), "H001")
        await index(world, hiv_bundle("HIV-1", with_hb=True))
        shared = await check(world, HB)
        assert shared[0].candidate is not None and shared[0].candidate.hospital == "H001"

        await consent(world, ConsentKind.OPT_OUT)
        assert await check(world, HB, HIV) == without
        fhir_after = [await search(api, doctor, p, **q) for p, q in queries]
        for a, b in zip(fhir_after, fhir_without, strict=True):
            assert a["total"] == b["total"]
            assert {e["resource"]["id"] for e in a["entry"]} == {
                e["resource"]["id"] for e in b["entry"]
            }

        own = await check(world, HB, actor=DR_ZHAO)
        assert own[0].candidate is not None and own[0].candidate.hospital == "H001"
        zhao = await bearer(world, "doctor", "H001", "dr.zhao")
        mine = await search(api, zhao, "/fhir/DiagnosticReport", **{"subject:identifier": A})
        assert {e["resource"]["meta"]["source"] for e in mine["entry"]} == {"H001"}

    async def test_an_opt_out_withdrawn_shares_again(self, world: Container) -> None:
        await index(world, f.lab_bundle(accession="CBC-H1"), "H001")
        shared = await check(world, HB)
        opt_out = await consent(world, ConsentKind.OPT_OUT)
        assert (await check(world, HB)) != shared
        await world.consent_service().withdraw(DR_ZHAO, opt_out.id)
        assert await check(world, HB) == shared


class TestBreakGlass:
    @staticmethod
    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "mrb_break_glass_reads_total", {"channel": "recognition-check"}
        )
        return value or 0.0

    async def test_an_emergency_with_a_reason_is_flagged_counted_and_reported(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        await consent(world, ConsentKind.OPT_OUT)
        before = self.counted()
        (item,) = await check(
            world, HIV, emergency=True, break_glass_reason="unconscious, transfusion"
        )
        assert item.candidate is not None and item.candidate.hospital == "H001"
        assert self.counted() == before + 1
        async with world.sessions() as s:
            rows = (
                await s.execute(select(audit_event).where(audit_event.c.purpose == "break-glass"))
            ).all()
        (entry,) = rows
        assert entry.actor == "dr.li" and entry.action == "recognition-check"
        assert entry.detail["break_glass_reason"] == "unconscious, transfusion"

        security = await bearer(world, "security-admin", "*", "sec.wang")
        r = await api.get("/api/v1/audit/break-glass", headers=security)
        assert r.status_code == 200, r.text
        (listed,) = r.json()
        assert listed["actor"] == "dr.li" and listed["reason"] == "unconscious, transfusion"
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        assert (await api.get("/api/v1/audit/break-glass", headers=doctor)).status_code == 403

    async def test_an_emergency_without_a_reason_does_not_bypass(self, world: Container) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        hidden = await check(world, HIV)
        (plain,) = await check(world, HIV, emergency=True)
        assert (plain.decision, plain.candidate, plain.others) == (
            hidden[0].decision,
            None,
            hidden[0].others,
        )
        await index(world, f.lab_bundle(accession="CBC-H1"), "H001")
        await consent(world, ConsentKind.OPT_OUT)
        without = await check(world, HB, emergency=True)
        assert all(d.candidate is None or d.candidate.hospital == "H002" for d in without)

    async def test_fhir_break_glass_reads_beyond_an_opt_out(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        await index(world, f.lab_bundle(accession="CBC-H1"), "H001")
        await consent(world, ConsentKind.OPT_OUT)
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        q = {"subject:identifier": A}
        plain = await search(api, doctor, "/fhir/DiagnosticReport", **q)
        glass = {
            **doctor,
            "X-Purpose-Of-Use": "ETREAT",
            "X-Break-Glass-Reason": "coma%20%E6%98%8F%E8%BF%B7",
        }
        r = await api.get("/fhir/DiagnosticReport", params=q, headers=glass)
        assert r.status_code == 200 and r.json()["total"] == plain["total"] + 1
        no_reason = {**doctor, "X-Purpose-Of-Use": "BTG"}
        assert (
            await api.get("/fhir/DiagnosticReport", params=q, headers=no_reason)
        ).status_code == 400
        async with world.sessions() as s:
            reasons = (
                (
                    await s.execute(
                        select(audit_event.c.detail).where(audit_event.c.purpose == "break-glass")
                    )
                )
                .scalars()
                .all()
            )
        assert [d["break_glass_reason"] for d in reasons] == ["coma 昏迷"]

    async def test_a_fhir_patient_read_that_breaks_the_glass_is_counted(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        """A Patient read by id with an emergency and a reason is flagged in the audit trail
        and counted for the alert, like a search; a plain read is counted by neither."""

        def counted() -> float:
            found = REGISTRY.get_sample_value("mrb_break_glass_reads_total", {"channel": "fhir"})
            return found or 0.0

        await index(world, f.lab_bundle(accession="CBC-H1"), "H001")
        await consent(world, ConsentKind.OPT_OUT)
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        (entry,) = (await search(api, doctor, "/fhir/Patient", identifier=A))["entry"]
        path = f"/fhir/Patient/{entry['resource']['id']}"
        before = counted()
        assert (await api.get(path, headers=doctor)).status_code == 200
        assert counted() == before
        glass = {**doctor, "X-Purpose-Of-Use": "ETREAT", "X-Break-Glass-Reason": "unconscious"}
        r = await api.get(path, headers=glass)
        assert r.status_code == 200 and r.json()["resourceType"] == "Patient"
        assert counted() == before + 1
        async with world.sessions() as s:
            rows = (
                await s.execute(select(audit_event).where(audit_event.c.purpose == "break-glass"))
            ).all()
        assert [(e.action, e.detail.get("resource")) for e in rows] == [("fhir-read", "Patient")]
        assert rows[0].detail["break_glass_reason"] == "unconscious"


class TestPurpose:
    async def test_an_unknown_purpose_is_a_400_problem(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        doctor = await bearer(world, "doctor", "H002", "dr.li")
        body = {
            "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
            "ordering_hospital": "H002",
            "order_time": MAY_20.isoformat(),
            "items": [{"system": f.LOINC, "code": "718-7"}],
            "purpose": "RESEARCH",
        }
        r = await api.post("/api/v1/recognition/check", json=body, headers=doctor)
        assert r.status_code == 400 and r.headers["content-type"].startswith(
            "application/problem+json"
        )
        r = await api.post(
            "/api/v1/recognition/check", json={**body, "purpose": "HQUALIMP"}, headers=doctor
        )
        assert r.status_code == 403
        r = await api.post(
            "/api/v1/recognition/check", json={**body, "purpose": "TREAT"}, headers=doctor
        )
        assert r.status_code == 200


class TestFhirConsent:
    async def test_readable_by_the_patients_own_hospital_only(
        self, world: Container, api: httpx.AsyncClient
    ) -> None:
        await index(world, hiv_bundle("HIV-1", with_hb=False))
        zhao = await bearer(world, "doctor", "H001", "dr.zhao")
        r = await api.post(
            "/api/v1/patients/consents",
            json={
                "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
                "kind": "sensitive",
                "category": "HIV",
                "evidence": "FORM-7",
                "expires": in_a_year().isoformat(),
            },
            headers=zhao,
        )
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        found = await search(api, zhao, "/fhir/Consent", **{"patient:identifier": A})
        (entry,) = found["entry"]
        res = entry["resource"]
        assert res["resourceType"] == "Consent" and res["status"] == "active"
        assert res["scope"]["coding"][0]["code"] == "patient-privacy"
        assert res["provision"]["type"] == "permit"
        assert res["provision"]["code"][0]["coding"][0]["code"] == "HIV"
        assert res["sourceReference"]["identifier"]["value"] == "FORM-7"
        assert (await api.get(f"/fhir/Consent/{cid}", headers=zhao)).json()["id"] == cid

        other = await bearer(world, "doctor", "H003", "dr.sun")
        assert (await search(api, other, "/fhir/Consent", **{"patient:identifier": A}))[
            "total"
        ] == 0
        assert (await api.get(f"/fhir/Consent/{cid}", headers=other)).status_code == 404
        r = await api.post(f"/api/v1/patients/consents/{cid}/withdraw", headers=other)
        assert r.status_code == 404

        r = await api.post(f"/api/v1/patients/consents/{cid}/withdraw", headers=zhao)
        assert r.status_code == 200 and r.json()["status"] == "inactive"
        res = (await api.get(f"/fhir/Consent/{cid}", headers=zhao)).json()
        assert res["status"] == "inactive"
        meta = (await api.get("/fhir/metadata")).json()
        assert "Consent" in {x["type"] for x in meta["rest"][0]["resource"]}
