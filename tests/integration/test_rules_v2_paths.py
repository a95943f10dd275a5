"""Recognition rules v2 through the real path: FHIR, HL7 v2 and DICOM input -> ingest ->
index -> check, on SQLite and PostgreSQL. Each unsafe category the pure rules refuse is
also refused when it arrives as a hospital would send it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.dicom.bundle import BundleOptions, study_bundle
from adapters.dicom.headers import PatientIdHeader, read_headers
from adapters.dicom.study import SeenInstance, group
from adapters.hl7v2.oru import map_message
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Decision, ItemDecision, Order, PatientContext
from broker.services.checks import CheckRequest, run_check
from tests import factories as f
from tests.conftest import certify

SHANGHAI = ZoneInfo("Asia/Shanghai")
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
HB = Order(system="http://loinc.org", code="718-7")
CBC = Order(system="http://loinc.org", code="58410-2")
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
LEFT, RIGHT = "7771000", "24028007"
KNEE = "72696002"


async def index(c: Container, value: bytes, hospital: str = "H001") -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


async def decide(
    c: Container, *orders: Order, patient: str = f.PATIENT_A, context: PatientContext | None = None
) -> list[ItemDecision]:
    answer = await run_check(
        c.check_uow(),
        c.reference_rules(),
        CheckRequest(
            f.NATIONAL, patient, "H002", MAY_20, orders, patient=context or PatientContext()
        ),
        DOCTOR,
    )
    return [a.decision for a in answer.items]


def lab(accession: str, *observations: dict[str, Any], extra: list[Any] = ()) -> bytes:  # type: ignore[assignment]
    report = {
        "resourceType": "DiagnosticReport",
        "id": f"dr-{accession}",
        "identifier": [{"system": "urn:lab:H001", "value": accession}],
        "status": "final",
        "code": {"coding": [{"system": f.LOINC, "code": "58410-2"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": observations[0]["effectiveDateTime"],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
    }
    entries = [("urn:uuid:patient", f.patient()), ("urn:uuid:dr", report)]
    entries += [(f"urn:uuid:{o['id']}", o) for o in observations]
    entries += list(extra)
    return f.bundle(entries)


@pytest.fixture
async def certified(container: Container) -> Container:
    for scope in ("HEMATOLOGY", "MR", "DR", "CT"):
        await certify(container, "H001", scope)
    return container


class TestNoValueFromFhir:
    async def test_data_absent_reason(self, certified: Container) -> None:
        hb = f.observation("hb", "718-7", 0)
        del hb["valueQuantity"]
        hb["dataAbsentReason"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "error",
                }
            ]
        }
        await index(certified, lab("A1", hb, f.observation("plt", "777-3", 250, "10*9/L")))
        hb_d, cbc_d = await decide(certified, HB, CBC)
        assert hb_d.decision is Decision.NO_VALUE and "error" in hb_d.explanation.en
        assert cbc_d.decision is Decision.NO_VALUE

    async def test_a_haemolysed_specimen(self, certified: Container) -> None:
        specimen = {
            "resourceType": "Specimen",
            "id": "sp1",
            "condition": [{"coding": [{"system": V2_0493, "code": "HEM"}], "text": "溶血"}],
        }
        hb = f.observation("hb", "718-7", 13.2) | {"specimen": {"reference": "urn:uuid:sp1"}}
        await index(certified, lab("A2", hb, extra=[("urn:uuid:sp1", specimen)]))
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.NO_VALUE and "溶血" in d.explanation.zh

    async def test_a_report_none_of_whose_observations_has_a_value(
        self, certified: Container
    ) -> None:
        empty = [f.observation(i, c, 0) for i, c in (("hb", "718-7"), ("plt", "777-3"))]
        for o in empty:
            del o["valueQuantity"]
        await index(certified, lab("A3", *empty))
        (d,) = await decide(certified, CBC)
        assert d.decision is Decision.NO_VALUE


class TestWarningsFromFhir:
    async def test_a_newer_result_is_named_with_its_value_and_flags(
        self, certified: Container
    ) -> None:
        await index(certified, f.lab_bundle(accession="OLD", hb=13.2,
                                            effective="2026-05-16T08:00:00+08:00"))  # fmt: skip
        newer = f.observation("hb2", "718-7", 7.1, effective="2026-05-19T08:00:00+08:00")
        newer["identifier"] = [{"system": "urn:lab:H002", "value": "N-1"}]
        newer["interpretation"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "LL",
                    }
                ]
            }
        ]
        await index(
            certified, f.bundle([("urn:uuid:patient", f.patient(mrn=None)), ("urn:uuid:o", newer)]),
            hospital="H002",
        )  # fmt: skip
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.hospital == "H001" and d.candidate.value == "13.2"
        (w,) = d.warnings
        assert (w.kind, w.hospital, w.value, w.unit, w.flags) == (
            "newer-result", "H002", "7.1", "g/dL", ("LL",),
        )  # fmt: skip


def hl7(spm_condition: str = "", spm_reject: str = "", obx11: str = "F") -> bytes:
    segments = [
        "MSH|^~\\&|LIS|H001|MRB|MRB|20260518103000+0800||ORU^R01^ORU_R01|M1|P|2.5.1"
        "|||||CHN|UNICODE UTF-8",
        f"PID|1||{f.PATIENT_A}^^^^NNCHN||张^三||19491231|F",
        "OBR|1|PL1^HIS|FL1^LIS|718-7^Hemoglobin^LN|||20260518080000|||||||||||||||20260518100000|||F",
        f"OBX|1|NM|718-7^Hemoglobin^LN||{'' if obx11 in 'XN' else '13.2'}|g/dL|12-16|N|||{obx11}"
        "|||20260518080000",
        "SPM|1|BC1&HIS^LAB1&LIS||BLD^Whole blood^HL70487|||||||||||||20260518080000|20260518083000"
        f"|||{spm_reject}|||{spm_condition}",
    ]
    (report,) = map_message(("\r".join(segments) + "\r").encode(), hospital="H001").reports
    return report.value


class TestNoValueFromHl7:
    @pytest.mark.parametrize(
        ("condition", "reject", "said"),
        [("HEM", "", "haemolysed"), ("CLOT", "", "clotted"), ("", "RH", "rejected (RH)")],
    )
    async def test_an_unusable_specimen(
        self, certified: Container, condition: str, reject: str, said: str
    ) -> None:
        await index(certified, hl7(condition, reject))
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.NO_VALUE and said in d.explanation.en

    @pytest.mark.parametrize("obx11", ["X", "N"])
    async def test_a_result_the_lab_could_not_produce(
        self, certified: Container, obx11: str
    ) -> None:
        await index(certified, hl7(obx11=obx11))
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.NO_VALUE and "data absent" in d.explanation.en

    async def test_a_good_specimen_is_recognised(self, certified: Container) -> None:
        await index(certified, hl7("ROOM"))
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.value == "13.2" and d.candidate.flags == ("N",)


def knee_study(realdata: Path, side: str | None) -> bytes:
    base = read_headers(realdata / "dicom" / "MR_small.dcm", zone=SHANGHAI)
    h = replace(
        base,
        modality="MR",
        body_part="KNEE",
        contrast=None,
        laterality=side,
        patient=PatientIdHeader(f.PATIENT_A, issuer="身份证"),
        started=datetime(2026, 5, 10, 9, tzinfo=SHANGHAI),
    )
    (study,), rejected = group([SeenInstance(h, MAY_20)])
    assert not rejected
    return study_bundle(study, BundleOptions("H001")).value


class TestImagingFromDicom:
    async def test_a_sided_study_matches_only_its_side(
        self, certified: Container, realdata: Path
    ) -> None:
        await index(certified, knee_study(realdata, "L"))
        left, right, unsided = await decide(
            certified,
            Order(modality="MR", body_site=KNEE, laterality=LEFT),
            Order(modality="MR", body_site=KNEE, laterality=RIGHT),
            Order(modality="MR", body_site=KNEE),
        )
        assert left.decision is Decision.RECOGNIZABLE, left.explanation.en
        assert right.decision is Decision.NO_PRIOR_RESULT and right.candidate is None
        assert [o.near_miss for o in right.others] == [True]
        assert "left side" in right.explanation.en
        assert unsided.decision is Decision.NO_PRIOR_RESULT

    async def test_a_study_of_unknown_side_never_matches_a_sided_order(
        self, certified: Container, realdata: Path
    ) -> None:
        await index(certified, knee_study(realdata, None))
        (d,) = await decide(certified, Order(modality="MR", body_site=KNEE, laterality=LEFT))
        assert d.decision is Decision.NO_PRIOR_RESULT and "unknown" in d.explanation.en

    async def test_an_enhanced_order_is_not_met_by_a_plain_study(
        self, certified: Container, realdata: Path
    ) -> None:
        await index(certified, knee_study(realdata, "L"))
        (d,) = await decide(
            certified, Order(modality="MR", body_site=KNEE, laterality=LEFT, protocol="enhanced")
        )
        assert d.decision in (Decision.NO_PRIOR_RESULT, Decision.NOT_IN_CATALOG)


class TestVersionsAreRecorded:
    async def test_a_check_stores_the_catalog_and_policy_versions(
        self, certified: Container
    ) -> None:
        from sqlalchemy import select

        from broker.storage.tables import recognition_check

        await decide(certified, HB)
        async with certified.sessions() as s:
            row = (await s.execute(select(recognition_check))).one()
        rules = certified.reference_rules()
        assert row.policy_version == rules.policy.version
        assert row.catalog_version.startswith(rules.catalog.version)
        assert json.dumps(row.items)  # the answer is stored beside them


class TestAgeFromTheSentBirthDate:
    """An age-banded item takes the age from the birth date hospitals sent (sealed)."""

    async def _banded(self, c: Container) -> None:
        from broker.domain.catalog import AgeBand

        rules = c.reference_rules()
        hb = rules.catalog.items["LAB-HGB"]
        band = AgeBand("儿童不适用", "not for children", max_days=365 * 14, exclude=True)
        items = {**rules.catalog.items, "LAB-HGB": replace(hb, age_bands=(band,))}
        c._rules = replace(rules, catalog=replace(rules.catalog, items=items))  # type: ignore[attr-defined]

    async def test_the_birth_date_sent_with_the_result_decides(self, certified: Container) -> None:
        await self._banded(certified)
        born = "2020-02-29"
        child = f.patient(f.resident_id(born)) | {"birthDate": born}
        await index(certified, f.lab_bundle(pat=child))
        (d,) = await decide(certified, HB, patient=f.resident_id(born))
        assert d.decision is Decision.EXCLUDED and "children" in d.explanation.en

    async def test_an_adult(self, certified: Container) -> None:
        await self._banded(certified)
        await index(certified, f.lab_bundle(pat=f.patient() | {"birthDate": f.PATIENT_A_BORN}))
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.RECOGNIZABLE

    async def test_a_birth_date_contradicting_the_number_never_joins_the_person(
        self, certified: Container
    ) -> None:
        """A child's record under an adult's number (a newborn under a parent's) stays
        with its hospital: the adult's age, from the record that agrees, decides."""
        await self._banded(certified)
        await index(certified, f.lab_bundle(pat=f.patient() | {"birthDate": f.PATIENT_A_BORN}))
        other = f.patient(mrn=None) | {"birthDate": "2026-01-01"}
        await index(certified, f.lab_bundle(accession="B2", pat=other), hospital="H002")
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.hospital == "H001"

    async def test_disagreeing_hospitals_leave_the_age_unknown(self, certified: Container) -> None:
        """Two records of one person with different birth dates (one hospital linked the
        number without a birth date, then corrected its record): the age is unknown."""
        await self._banded(certified)
        await index(certified, f.lab_bundle(pat=f.patient() | {"birthDate": f.PATIENT_A_BORN}))
        other = f.patient(mrn="H3-1")
        await index(certified, f.lab_bundle(accession="B2", pat=other), hospital="H002")
        by_mrn = f.patient(national_id=None, mrn="H3-1") | {"birthDate": "2019-01-01"}
        await index(certified, f.lab_bundle(accession="B3", pat=by_mrn), hospital="H002")
        (d,) = await decide(certified, HB)
        assert d.decision is Decision.EXCLUDED and "unknown" in d.explanation.en
        (d,) = await decide(certified, HB, context=PatientContext(date(1949, 12, 31)))
        assert d.decision is Decision.RECOGNIZABLE  # the doctor's own answer wins

    async def test_no_birth_date_is_stored_in_clear(self, certified: Container) -> None:
        from sqlalchemy import select

        from broker.storage.tables import person_birth_date

        await index(certified, f.lab_bundle(pat=f.patient() | {"birthDate": f.PATIENT_A_BORN}))
        async with certified.sessions() as s:
            (row,) = (await s.execute(select(person_birth_date))).all()
        assert b"1949" not in row.ciphertext and row.algorithm


def _study_with_report(report_status: str | None) -> bytes:
    doc = json.loads(f.imaging_bundle())
    if report_status is None:
        doc["entry"] = [
            e for e in doc["entry"] if e["resource"]["resourceType"] != "DiagnosticReport"
        ]
    for e in doc["entry"]:
        if e["resource"]["resourceType"] == "DiagnosticReport":
            e["resource"]["status"] = report_status
    return json.dumps(doc).encode()


class TestImagingReportsFromFhir:
    CT_CHEST = Order(modality="CT", body_site="51185008")

    async def test_a_study_whose_report_was_withdrawn_is_withdrawn(
        self, certified: Container
    ) -> None:
        await index(certified, _study_with_report("entered-in-error"))
        (d,) = await decide(certified, self.CT_CHEST)
        assert d.decision is Decision.WITHDRAWN and "report" in d.explanation.en

    async def test_a_study_without_a_report_is_recognised_by_its_images(
        self, certified: Container
    ) -> None:
        await index(certified, _study_with_report(None))
        (d,) = await decide(certified, self.CT_CHEST)
        assert d.decision is Decision.RECOGNIZABLE and "no report yet" in d.explanation.en

    async def test_a_study_of_unstated_protocol_is_listed_not_matched(
        self, certified: Container
    ) -> None:
        await index(certified, f.imaging_bundle(contrast=None))
        (d,) = await decide(certified, self.CT_CHEST)
        assert d.decision is Decision.NO_PRIOR_RESULT and d.candidate is None
        assert [o.near_miss for o in d.others] == [True]


class TestRegionalListDates:
    async def test_a_regional_list_applies_from_its_day_in_shanghai(
        self, certified: Container
    ) -> None:
        from broker.domain.catalog import RegionOverride

        rules = certified.reference_rules()
        shorter = RegionOverride(
            "5105", validity_days={"LAB-HGB": 1}, version="t", effective_from=date(2026, 5, 20)
        )
        catalog = replace(rules.catalog, regions=(*rules.catalog.regions, shorter))
        certified._rules = replace(rules, catalog=catalog)  # type: ignore[attr-defined]
        await index(certified, f.lab_bundle())  # collected 2026-05-18 (Shanghai)

        async def at(moment: datetime) -> Decision:
            answer = await run_check(
                certified.check_uow(),
                certified.reference_rules(),
                CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", moment, (HB,)),
                DOCTOR,
            )
            return answer.items[0].decision.decision

        # 2026-05-19 23:00 in Shanghai: the list is not in force yet (7-day default).
        assert await at(datetime(2026, 5, 19, 15, 0, tzinfo=UTC)) is Decision.RECOGNIZABLE
        # 2026-05-20 01:30 in Shanghai (still the 19th in UTC): its 1-day window applies.
        assert await at(datetime(2026, 5, 19, 17, 30, tzinfo=UTC)) is Decision.EXPIRED
