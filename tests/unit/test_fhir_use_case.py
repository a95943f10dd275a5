"""The FHIR read and search use cases on fakes: who may read, what is served and paged,
what is audited (every read, with its purpose) and what a refusal leaves behind (the
same flows run over HTTP on SQLite and PostgreSQL in tests/integration/test_fhir_api.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.errors import Gone, Invalid, NotAllowed, NotFound, TooManyRequests
from broker.domain.identifiers import RESIDENT_ID_SYSTEM
from broker.fhir.cursors import CursorSigner
from broker.fhir.resources import ResultInfo, ResultView
from broker.fhir.service import FhirService, Reader, caller
from broker.ports import Hit, PersonRecord
from broker.reference.identifier_systems import shipped_identifier_registry
from tests import factories as f
from tests.fakes import FakeAdmission, FakeFhirReindex, FakeFhirUnitOfWork

PID = "2e4c9f0a-8b4d-4d1e-9a55-3c1f0e6b7d21"
AT = datetime(2026, 5, 18, 4, 0, tzinfo=UTC)
DR_LI = Actor("dr.li", Role.DOCTOR, "H001")  # reads results of H002
DR_WANG = Actor("dr.wang", Role.DOCTOR, "H001")
HOSPITAL_ROLES = (Role.ADAPTER, Role.DOCTOR, Role.FINANCE, Role.ADMIN)
REPORTS = [f"7d0c6a52-3a51-4a49-8f0e-1f7b8f5c9a1{n}" for n in range(3)]  # sorted


class World:
    """Three H002 reports of one patient, indexed, their payloads readable."""

    def __init__(self) -> None:
        self.uow = FakeFhirUnitOfWork()
        self.reindex = FakeFhirReindex()
        self.admission = FakeAdmission()
        self.service = FhirService(
            uow=self.uow,
            reindex=self.reindex,
            admission=self.admission,
            signer=CursorSigner(bytes(range(32))),
            zone=ZoneInfo("Asia/Shanghai"),
            identifiers=shipped_identifier_registry(),
        )
        for version, rid in enumerate(REPORTS, start=1):
            info = ResultInfo(
                rid, "DiagnosticReport", "DiagnosticReport|urn:lab:H001|ACC-1", "H002", PID, AT
            )
            self.uow.payloads.views[version] = ResultView(json.loads(f.lab_bundle()), info)
            self.uow.index.add(PID, Hit(rid, rid, version, "DiagnosticReport", 0, "final"))
        self.uow.index.people[PID] = PersonRecord(PID, None)

    def withdraw(self, rid: str) -> None:
        rows = self.uow.index.rows
        i = next(i for i, (_, h) in enumerate(rows) if h.served_id == rid)
        person, hit = rows[i]
        rows[i] = (person, Hit(rid, rid, hit.version_id, hit.resource_type, 0, "entered-in-error"))

    async def search(self, who: Reader, *pairs: tuple[str, str]) -> dict[str, Any]:
        return await self.service.search(
            who, "DiagnosticReport", list(pairs), strict=True, base="https://mrb/fhir"
        )


def matches(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def cursor(bundle: dict[str, Any], relation: str) -> tuple[str, str]:
    link = next(x["url"] for x in bundle["link"] if x["relation"] == relation)
    return ("_cursor", parse_qs(urlsplit(link).query)["_cursor"][0])


class TestWhoMayRead:
    @pytest.mark.parametrize("role", [r for r in Role if r is not Role.DOCTOR])
    def test_only_a_doctor_reads_patient_data(self, role: Role) -> None:
        with pytest.raises(NotAllowed) as refused:
            caller(
                Actor("someone", role, "H001" if role in HOSPITAL_ROLES else ALL_HOSPITALS), None
            )
        assert refused.value.issue == "forbidden" and role.value in refused.value.detail

    def test_the_stated_purpose_is_the_audit_purpose_and_unknown_purposes_are_refused(
        self,
    ) -> None:
        assert caller(DR_LI, None).purpose == "treatment"
        assert caller(DR_LI, " etreat ").purpose == "emergency-treatment"
        with pytest.raises(Invalid) as refused:
            caller(DR_LI, "RESEARCH")
        assert refused.value.issue == "invalid"

    @pytest.mark.parametrize("purpose", ["CAREMGT", "PATRQT", "HPAYMT", "HQUALIMP"])
    def test_a_doctor_reads_for_treatment_only(self, purpose: str) -> None:
        """A known purpose that is not treatment is refused to a doctor (403), not
        silently recorded: the issue's rule and PIPL Art. 28's narrowest purpose."""
        with pytest.raises(NotAllowed) as refused:
            caller(DR_LI, purpose)
        assert refused.value.issue == "forbidden"


class TestRead:
    async def test_a_doctor_reads_another_hospitals_result_and_the_read_is_audited(self) -> None:
        w = World()
        resource = await w.service.read(caller(DR_LI, "TREAT"), "DiagnosticReport", REPORTS[1])
        assert resource["resourceType"] == "DiagnosticReport" and resource["id"] == REPORTS[1]
        assert w.reindex.refreshed == [REPORTS[1]]  # brought up to date before it is read
        (read,) = w.uow.committed_reads
        assert read["actor"] == DR_LI and read["purpose"] == "treatment"
        assert read["action"] == "fhir-read" and read["person_id"] == PID
        assert read["detail"] == {"resource": f"DiagnosticReport/{REPORTS[1]}", "outcome": "read"}

    async def test_a_purged_payload_is_gone_and_the_attempt_audited(self) -> None:
        w = World()
        w.uow.payloads.purged.add(1)
        with pytest.raises(Gone) as gone:
            await w.service.read(caller(DR_LI, None), "DiagnosticReport", REPORTS[0])
        assert gone.value.issue == "deleted" and "purged" in gone.value.detail
        (read,) = w.uow.committed_reads
        assert read["detail"]["outcome"] == "purged"

    async def test_a_withdrawn_result_is_gone_and_the_attempt_audited(self) -> None:
        w = World()
        w.withdraw(REPORTS[2])
        with pytest.raises(Gone) as gone:
            await w.service.read(caller(DR_LI, None), "DiagnosticReport", REPORTS[2])
        assert "entered-in-error by H002" in gone.value.detail
        assert [r["detail"]["outcome"] for r in w.uow.committed_reads] == ["gone"]

    @pytest.mark.parametrize(
        ("rtype", "rid"),
        [("DiagnosticReport", "no-such-id"), ("Observation", REPORTS[0]), ("Claim", "x")],
    )
    async def test_what_mrb_does_not_serve_is_not_found_and_leaves_no_audit(
        self, rtype: str, rid: str
    ) -> None:
        w = World()
        with pytest.raises(NotFound) as refused:
            await w.service.read(caller(DR_LI, None), rtype, rid)
        assert refused.value.issue == "not-found"
        assert w.uow.commits == 0 and w.uow.committed_reads == [] and w.reindex.refreshed == []


class TestSearch:
    async def test_pages_follow_signed_links_and_each_page_is_audited(self) -> None:
        w = World()
        li = caller(DR_LI, None)
        first = await w.search(li, ("patient", PID), ("_count", "2"))
        assert first["total"] == 3 and matches(first) == REPORTS[:2]
        assert "previous" not in {x["relation"] for x in first["link"]}
        second = await w.search(li, cursor(first, "next"))
        assert matches(second) == REPORTS[2:]
        assert "next" not in {x["relation"] for x in second["link"]}
        back = await w.search(li, cursor(second, "previous"))
        assert matches(back) == REPORTS[:2]
        # The patient is counted against the rate limit once, not once per page.
        assert w.admission.admitted == [(None, PID)]
        details = [r["detail"] for r in w.uow.committed_reads]
        assert [(d["offset"], d["total"], d["returned"]) for d in details] == [
            (0, 3, 2),
            (2, 3, 1),
            (0, 3, 2),
        ]
        assert all(
            r["action"] == "fhir-search" and r["person_id"] == PID for r in w.uow.committed_reads
        )
        assert details[0]["parameters"] == ["_count", "patient"]

    async def test_a_paging_link_is_refused_to_another_doctor_and_nothing_is_audited(
        self,
    ) -> None:
        w = World()
        first = await w.search(caller(DR_LI, None), ("patient", PID), ("_count", "1"))
        with pytest.raises(NotAllowed):
            await w.search(caller(DR_WANG, None), cursor(first, "next"))
        with pytest.raises(Invalid):  # a link carries its whole search
            await w.search(caller(DR_LI, None), cursor(first, "next"), ("status", "final"))
        assert len(w.uow.committed_reads) == 1

    async def test_withdrawn_and_purged_results_are_left_out_of_a_search(self) -> None:
        w = World()
        w.withdraw(REPORTS[0])
        w.uow.payloads.purged.add(2)
        bundle = await w.search(caller(DR_LI, None), ("patient", PID))
        assert bundle["total"] == 2 and matches(bundle) == [REPORTS[2]]
        (outcome,) = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert outcome["issue"][0]["code"] == "deleted"
        assert "1 matching resource(s) not returned" in outcome["issue"][0]["diagnostics"]

    async def test_by_identifier_the_patient_is_admitted_and_audited_by_identifier(
        self,
    ) -> None:
        w = World()
        ident = ("patient:identifier", f"{RESIDENT_ID_SYSTEM}|{f.PATIENT_A}")
        bundle = await w.search(caller(DR_LI, None), ident)
        assert bundle["total"] == 0  # nobody linked to it yet
        ((admitted, _),) = w.admission.admitted
        (read,) = w.uow.committed_reads
        assert admitted is not None and admitted.value == f.PATIENT_A
        assert read["patient"] == admitted and read["person_id"] is None

    async def test_over_the_rate_limit_nothing_is_read_or_audited(self) -> None:
        w = World()
        w.admission.refuse = TooManyRequests("Too Many Requests", "over", 60, issue="throttled")
        with pytest.raises(TooManyRequests):
            await w.search(caller(DR_LI, None), ("patient", PID))
        assert w.uow.committed_reads == [] and w.reindex.refreshed == []
