"""A result's resources found in its payload, their index rows, and how mrb serves them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from broker.fhir.dates import parse_range
from broker.fhir.resources import ResultInfo, ResultView, merge_patients
from tests import factories as f

CST = ZoneInfo("Asia/Shanghai")
RID = "7d0c6a52-3a51-4a49-8f0e-1f7b8f5c9a10"
PID = "2e4c9f0a-8b4d-4d1e-9a55-3c1f0e6b7d21"
AT = datetime(2026, 5, 18, 4, 0, tzinfo=UTC)


def lab(doc: dict[str, Any] | None = None) -> ResultView:
    doc = doc or json.loads(f.lab_bundle())
    info = ResultInfo(
        RID, "DiagnosticReport", "DiagnosticReport|urn:lab:H001|ACC-1", "H001", PID, AT
    )
    return ResultView(doc, info)


def imaging() -> ResultView:
    info = ResultInfo(
        RID, "ImagingStudy", "ImagingStudy|urn:dicom:uid|urn:oid:1.2.3.4", "H002", PID, AT
    )
    return ResultView(json.loads(f.imaging_bundle()), info)


class TestFinding:
    def test_the_report_is_served_under_the_result_id_and_its_observations_under_stable_ids(
        self,
    ) -> None:
        view = lab()
        assert view.main is not None and view.main.served_id == RID
        ids = [m.served_id for m in view.members]
        assert len(ids) == 2 and len(set(ids)) == 2 and RID not in ids
        # A later version of the same result keeps the ids.
        assert [m.served_id for m in lab(json.loads(f.lab_bundle(hb=14.0))).members] == ids
        # Another result's observations get other ids.
        other = ResultView(
            json.loads(f.lab_bundle()),
            ResultInfo(
                "11111111-1111-1111-1111-111111111111",
                "DiagnosticReport",
                "DiagnosticReport|urn:lab:H001|ACC-1",
                "H001",
                PID,
                AT,
            ),
        )
        assert not {m.served_id for m in other.members} & set(ids)

    def test_the_main_resource_is_found_by_its_business_identifier(self) -> None:
        view = ResultView(
            json.loads(f.lab_bundle()),
            ResultInfo(
                RID, "DiagnosticReport", "DiagnosticReport|urn:lab:H001|OTHER", "H001", PID, AT
            ),
        )
        assert view.main is None and view.served() == []

    def test_an_imaging_result_serves_the_study_and_its_report(self) -> None:
        view = imaging()
        assert view.main is not None and view.main.resource["resourceType"] == "ImagingStudy"
        assert [m.resource["resourceType"] for m in view.members] == ["DiagnosticReport"]


class TestRendering:
    def test_ids_references_and_meta_are_mrbs(self) -> None:
        view = lab()
        assert view.main is not None
        report = view.render(view.main)
        assert report["id"] == RID
        assert report["subject"] == {"reference": f"Patient/{PID}"}
        assert report["result"] == [
            {"reference": f"Observation/{m.served_id}"} for m in view.members
        ]
        assert report["meta"] == {
            "lastUpdated": "2026-05-18T04:00:00.000Z",
            "versionId": "1",
            "source": "H001",
        }
        assert list(report)[:3] == ["resourceType", "id", "meta"]
        obs = view.render(view.members[0])
        assert obs["subject"]["reference"] == f"Patient/{PID}"
        assert obs["valueQuantity"] == {"value": 13.2, "unit": "g/dL"}  # as the hospital sent

    def test_references_mrb_does_not_serve_keep_only_what_names_them(self) -> None:
        doc = json.loads(f.lab_bundle())
        report = doc["entry"][1]["resource"]
        report["performer"] = [
            {"reference": "Organization/lab", "display": "检验科"},
            {"reference": "Practitioner/7"},
        ]
        report["specimen"] = [{"reference": "#sp1"}]
        untouched = copy.deepcopy(doc)
        view = lab(doc)
        assert view.main is not None
        served = view.render(view.main)
        assert served["performer"] == [
            {"display": "检验科"},
            {"display": "Practitioner/7 (held by H001; not served by mrb)"},
        ]
        assert served["specimen"] == [{"reference": "#sp1"}]  # contained: unchanged
        assert doc == untouched  # the payload itself is never changed

    def test_the_imaging_report_points_at_the_study(self) -> None:
        view = imaging()
        report = view.render(view.members[0])
        assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{RID}"}]
        assert report["meta"]["source"] == "H002"

    def test_the_patient(self) -> None:
        patient = lab().patient_resource()
        assert patient["id"] == PID
        assert patient["identifier"][0] == {"system": f.NATIONAL, "value": f.PATIENT_A}
        lone = json.loads(
            json.dumps(
                f.observation(
                    "o1", "718-7", 12.0, subject={"identifier": {"system": "urn:mrn", "value": "9"}}
                )
            )
        )
        lone["identifier"] = [{"system": "urn:obs", "value": "1"}]
        view = ResultView(
            lone, ResultInfo(RID, "Observation", "Observation|urn:obs|1", "H002", PID, AT)
        )
        assert view.patient_resource()["identifier"] == [{"system": "urn:mrn", "value": "9"}]

    def test_patients_from_several_hospitals_merge_their_identifiers(self) -> None:
        other = json.loads(f.lab_bundle(pat=f.patient(mrn="H2-77", mrn_system="urn:h2:mrn")))
        merged = merge_patients([lab(other), lab()], PID)
        assert [i["value"] for i in merged["identifier"]] == [f.PATIENT_A, "H2-77", "MRN-1"]
        assert merge_patients([], PID) == {"resourceType": "Patient", "id": PID}


class TestIndexRows:
    def test_lab_rows(self) -> None:
        rows = {r.resource_type + ":" + r.served_id: r for r in lab().index_rows(CST)}
        report = rows[f"DiagnosticReport:{RID}"]
        assert report.status == "final"
        assert report.dates == parse_range("2026-05-18T08:30:00+08:00", CST)
        assert {
            ("code", "http://loinc.org", "58410-2"),
            ("category", "http://terminology.hl7.org/CodeSystem/v2-0074", "LAB"),
            ("identifier", "urn:lab:H001", "ACC-1"),
        } == report.tokens
        observations = [r for r in rows.values() if r.resource_type == "Observation"]
        assert {t for r in observations for t in r.tokens} == {
            ("code", "http://loinc.org", "718-7"),
            ("code", "http://loinc.org", "777-3"),
        }
        (patient,) = [r for r in rows.values() if r.resource_type == "Patient"]
        assert patient.entry == 0 and patient.tokens == frozenset()

    def test_imaging_rows(self) -> None:
        rows = imaging().index_rows(CST)
        study = next(r for r in rows if r.resource_type == "ImagingStudy")
        dcm = "http://dicom.nema.org/resources/ontology/DCM"
        assert study.tokens == {
            ("modality", dcm, "CT"),
            ("bodysite", f.SNOMED, "51185008"),
            ("identifier", "urn:dicom:uid", "urn:oid:1.2.3.4"),
        }
        assert study.dates == parse_range("2026-05-10T09:00:00+08:00", CST)
        report = next(r for r in rows if r.resource_type == "DiagnosticReport")
        assert report.dates is None  # the report states no effective time
