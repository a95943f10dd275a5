"""From FHIR messages to results: identity, versions, items, patients, rejections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from broker.domain.identifiers import FHIR_PATIENT_ID_SYSTEM, IdentifierScope
from broker.domain.rejections import RejectCode, Rejected
from broker.domain.results import ParsedMessage, ResultKind
from broker.domain.versions import HASH_MARK
from broker.ingest.parse import parse_message
from tests import factories as f

SHANGHAI = ZoneInfo("Asia/Shanghai")


def parse(value: bytes, content_type: str | None = None) -> ParsedMessage:
    return parse_message(value, hospital="H001", zone=SHANGHAI, content_type=content_type)


def rejected(value: bytes, content_type: str | None = None) -> Rejected:
    with pytest.raises(Rejected) as info:
        parse(value, content_type)
    return info.value


class TestLabReport:
    def test_report_with_observations_is_one_result_with_every_item(self) -> None:
        (r,) = parse(f.lab_bundle()).results
        assert r.kind is ResultKind.LAB
        assert r.business_id == "DiagnosticReport|urn:lab:H001|ACC-1"
        codes = [c.code for i in r.items for c in i.codings]
        assert codes == ["58410-2", "718-7", "777-3"]
        assert r.items[1].summary == "LOINC 718-7: 13.2 g/dL"
        assert r.effective == datetime(2026, 5, 18, 0, 30, tzinfo=UTC)

    def test_version_comes_from_meta(self) -> None:
        (r,) = parse(f.lab_bundle(last_updated="2026-05-19T10:00:00+08:00", version="3")).results
        assert r.version.source_time == datetime(2026, 5, 19, 2, 0, tzinfo=UTC)
        assert r.version.version_number == 3

    def test_issued_is_the_source_time_without_last_updated(self) -> None:
        (r,) = parse(f.lab_bundle(last_updated=None)).results
        assert r.version.source_time == datetime(2026, 5, 18, 3, 0, tzinfo=UTC)

    def test_patient_identifiers_are_normalised(self) -> None:
        (r,) = parse(f.lab_bundle()).results
        national, mrn = r.patient.identifiers
        assert national.scope is IdentifierScope.NATIONAL
        assert mrn.scope is IdentifierScope.HOSPITAL and mrn.hospital == "H001"
        assert r.patient.resource_key is not None
        assert r.patient.resource_key.system == FHIR_PATIENT_ID_SYSTEM

    def test_same_content_gives_the_same_hash_and_a_change_does_not(self) -> None:
        a = parse(f.lab_bundle()).results[0]
        b = parse(f.lab_bundle()).results[0]
        c = parse(f.lab_bundle(hb=9.1)).results[0]
        assert a.content_hash == b.content_hash != c.content_hash

    def test_the_hash_is_marked_and_the_earlier_form_still_computed(self) -> None:
        """Stored versions keep the hash form they were written with: a replay of one
        written before orjson must still be told apart only by its content."""

        def earlier(hb: float) -> str:
            r = parse(f.lab_bundle(hb=hb)).results[0]
            assert r.content_hash.startswith(HASH_MARK) and len(r.content_hash) == 64
            assert r.legacy_hash is not None
            return r.legacy_hash()

        assert len(earlier(9.1)) == 64 and not earlier(9.1).startswith(HASH_MARK)
        assert earlier(9.1) == earlier(9.1) != earlier(9.2)

    def test_patient_details_do_not_change_the_result_hash(self) -> None:
        a = parse(f.lab_bundle()).results[0]
        b = parse(f.lab_bundle(pat=f.patient(mrn="MRN-OTHER"))).results[0]
        assert a.content_hash == b.content_hash

    def test_withdrawn_statuses(self) -> None:
        assert parse(f.lab_bundle(status="entered-in-error")).results[0].withdrawn
        assert parse(f.lab_bundle(status="cancelled")).results[0].withdrawn
        assert not parse(f.lab_bundle(status="amended")).results[0].withdrawn

    def test_zone_less_time_takes_the_hospital_zone_and_says_so(self) -> None:
        (r,) = parse(f.lab_bundle(effective="2026-05-18T08:30:00")).results
        assert r.effective == datetime(2026, 5, 18, 0, 30, tzinfo=UTC)
        assert r.timezone_assumed

    def test_recognition_mark_extension_is_read_per_item(self) -> None:
        doc = json.loads(f.lab_bundle())
        doc["entry"][2]["resource"]["extension"] = [
            {"url": "urn:mrb:fhir:extension:recognition-mark", "valueString": "川HR"}
        ]
        (r,) = parse(json.dumps(doc).encode()).results
        assert [i.recognition_mark for i in r.items] == [None, "川HR", None]

    def test_transaction_bundle_is_accepted(self) -> None:
        doc = json.loads(f.lab_bundle())
        doc["type"] = "transaction"
        assert len(parse(json.dumps(doc).encode()).results) == 1


class TestImaging:
    def test_study_with_its_report_is_one_imaging_result(self) -> None:
        (r,) = parse(f.imaging_bundle(laterality="7771000")).results
        assert r.kind is ResultKind.IMAGING
        assert r.business_id == "ImagingStudy|urn:dicom:uid|urn:oid:1.2.3.4"
        study_item, report_item = r.items
        assert study_item.modality == "CT"
        assert study_item.body_site is not None and study_item.body_site.code == "51185008"
        assert study_item.laterality is not None and study_item.laterality.code == "7771000"
        assert [c.code for c in report_item.codings] == ["24627-2"]
        assert r.effective == datetime(2026, 5, 10, 1, 0, tzinfo=UTC)

    def test_imaging_report_without_its_study_is_a_report_only(self) -> None:
        doc = json.loads(f.imaging_bundle())
        doc["entry"] = [e for e in doc["entry"] if e["resource"]["resourceType"] != "ImagingStudy"]
        doc["entry"][1]["resource"].pop("imagingStudy")
        doc["entry"][1]["resource"]["id"] = "rad1"
        (r,) = parse(json.dumps(doc).encode()).results
        assert r.kind is ResultKind.REPORT


class TestPatients:
    def test_subject_identifier_alone_identifies_a_single_resource(self) -> None:
        obs = f.observation(
            "o1",
            "2345-7",
            5.4,
            "mmol/L",
            subject={"identifier": {"system": f.NATIONAL, "value": f.PATIENT_B}},
        )
        (r,) = parse(json.dumps(obs).encode()).results
        assert r.patient.identifiers[0].value == f.PATIENT_B
        assert r.patient.resource_key is None

    def test_reference_to_a_patient_outside_the_message_is_kept_as_a_hospital_key(self) -> None:
        obs = f.observation("o1", "2345-7", 5.4, subject={"reference": "Patient/pat2"})
        (r,) = parse(json.dumps(obs).encode()).results
        assert r.patient.identifiers == ()
        assert r.patient.resource_key is not None
        assert r.patient.resource_key.value == "pat2"

    def test_urn_uuid_reference_missing_from_the_bundle_is_not_identified(self) -> None:
        obs = f.observation("o1", "2345-7", 5.4)
        assert rejected(json.dumps(obs).encode()).code is RejectCode.PATIENT_NOT_IDENTIFIED

    def test_result_without_subject_is_not_identified(self) -> None:
        obs = f.observation("o1", "2345-7", 5.4)
        del obs["subject"]
        assert rejected(json.dumps(obs).encode()).code is RejectCode.PATIENT_NOT_IDENTIFIED

    def test_only_identifier_with_bad_check_digit_is_refused(self) -> None:
        pat = f.patient("110101199003071234", mrn=None)
        del pat["id"]
        error = rejected(f.lab_bundle(pat=pat))
        assert error.code is RejectCode.INVALID_PATIENT_IDENTIFIER
        assert "110101199003071234" not in error.detail  # never echo the identifier

    def test_bad_national_id_beside_a_good_mrn_is_dropped(self) -> None:
        (r,) = parse(f.lab_bundle(pat=f.patient("110101199003071234"))).results
        assert [i.scope for i in r.patient.identifiers] == [IdentifierScope.HOSPITAL]

    def test_patient_alone_is_accepted_to_link_its_identifiers(self) -> None:
        parsed = parse(json.dumps(f.patient()).encode())
        assert parsed.results == () and len(parsed.patients) == 1

    def test_animal_patient_is_refused(self) -> None:
        pat = f.patient()
        pat["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-animal",
                "extension": [{"url": "species", "valueCodeableConcept": {}}],
            }
        ]
        assert rejected(json.dumps(pat).encode()).code is RejectCode.NON_HUMAN_PATIENT


class TestRejections:
    def test_unsupported_resource_type(self) -> None:
        value = json.dumps({"resourceType": "Medication", "id": "m"}).encode()
        assert rejected(value).code is RejectCode.UNSUPPORTED_RESOURCE_TYPE

    def test_searchset_bundle_is_refused(self) -> None:
        doc = json.loads(f.lab_bundle())
        doc["type"] = "searchset"
        assert rejected(json.dumps(doc).encode()).code is RejectCode.UNSUPPORTED_BUNDLE_TYPE

    def test_declared_stu3_content_type_is_refused(self) -> None:
        error = rejected(f.lab_bundle(), "application/fhir+json; fhirVersion=3.0")
        assert error.code is RejectCode.UNSUPPORTED_FHIR_VERSION

    def test_stu3_shaped_resource_is_recognised_as_stu3(self) -> None:
        study = {
            "resourceType": "ImagingStudy",
            "id": "s",
            "uid": "urn:oid:1.2.3",
            "patient": {"reference": "Patient/p"},
        }
        assert rejected(json.dumps(study).encode()).code is RejectCode.UNSUPPORTED_FHIR_VERSION

    def test_invalid_r4_names_the_element_without_its_value(self) -> None:
        doc = json.loads(f.lab_bundle())
        doc["entry"][2]["resource"]["valueQuantity"]["value"] = "13,2 (secret)"
        error = rejected(json.dumps(doc).encode())
        assert error.code is RejectCode.INVALID_FHIR
        assert "entry[2]" in error.detail and "valueQuantity" in error.detail
        assert "secret" not in error.detail

    def test_bundle_without_results_or_identified_patients(self) -> None:
        value = f.bundle([("urn:uuid:x", {"resourceType": "Specimen", "id": "s"})])
        assert rejected(value).code is RejectCode.NO_RESULT

    def test_out_of_scope_resources_in_a_bundle_are_ignored_not_rejected(self) -> None:
        doc = json.loads(f.lab_bundle())
        doc["entry"].append(
            {"fullUrl": "urn:uuid:prov", "resource": {"resourceType": "Provenance", "agent": [{}]}}
        )
        parsed = parse(json.dumps(doc).encode())
        assert len(parsed.results) == 1 and parsed.ignored_resource_types == ("Provenance",)

    def test_result_without_identifier_or_id(self) -> None:
        obs = f.observation(
            "o1",
            "2345-7",
            5.4,
            subject={"identifier": {"system": f.NATIONAL, "value": f.PATIENT_B}},
        )
        del obs["id"]
        assert rejected(json.dumps(obs).encode()).code is RejectCode.RESULT_NOT_IDENTIFIED

    def test_unparseable_date_is_invalid_fhir(self) -> None:
        assert rejected(f.lab_bundle(effective="18/05/2026")).code is RejectCode.INVALID_FHIR
