"""DICOM studies as FHIR bundles, read back by the broker's own parser."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from adapters.dicom.body_parts import BODY_PARTS
from adapters.dicom.bundle import BundleOptions, build_bundle, study_bundle
from adapters.dicom.headers import (
    DicomErrorCode,
    InstanceHeaders,
    PatientIdHeader,
    extract_headers,
    read_headers,
)
from adapters.dicom.study import SeenInstance, Study, StudySet, group
from broker.domain.catalog import Catalog
from broker.domain.identifiers import RESIDENT_ID_SYSTEM, IdentifierScope
from broker.domain.results import ExtractedResult, ResultKind
from broker.domain.sites import study_protocol
from broker.ingest.parse import parse_message
from broker.reference.loader import default_schemas_dir, load_catalog
from mrb_wire import resident_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
OPTIONS = BundleOptions("H001", wado_rs_base="https://pacs.h001.example/dicom-web")
RESIDENT_ID = "110101199003071233"  # check digit per GB 11643
WOMANS_ID = "11010119900307124" + resident_id.check_character("11010119900307124")
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"

# readable sample -> (modality, SNOMED CT body site, contrast, started as FHIR sends it)
INDEXED: dict[str, tuple[str, str | None, bool, str]] = {
    "CT_small.dcm": ("CT", None, True, "2004-01-19T07:27:30-05:00"),
    "J2K_pixelrep_mismatch.dcm": ("CT", "69536005", False, "2019-10-19T09:34:31.700+08:00"),
    "JPEG-lossy.dcm": ("NM", "38266002", False, "2004-08-26T18:50:59-04:00"),
    "MR_small.dcm": ("MR", None, False, "2004-08-26T18:50:59-04:00"),
    "dicomdir_77654033_CR1_6154.dcm": ("CR", "122494005", False, "2001-01-01T00:00:00+00:00"),
    "dicomdir_77654033_CT2_17106.dcm": ("CT", "69536005", False, "1995-09-03T17:30:32+00:00"),
    "dicomdir_98892003_MR1_4919.dcm": ("MR", None, False, "2003-05-05T02:51:09+00:00"),
    "examples_overlay.dcm": ("MR", "818983003", True, "2005-11-30T13:26:45.921+08:00"),
    "examples_ybr_color.dcm": ("US", None, False, "2016-05-03T12:08:50+08:00"),
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_schemas_dir())


def headers_of(realdata: Path, name: str) -> InstanceHeaders:
    return read_headers(realdata / "dicom" / name, zone=SHANGHAI)


def study_of(*instances: SeenInstance) -> Study:
    studies, rejected = group(instances)
    assert not rejected
    (study,) = studies
    return study


def one_result(value: bytes) -> ExtractedResult:
    (result,) = parse_message(value, hospital="H001", zone=SHANGHAI).results
    return result


def resources(value: bytes) -> dict[str, dict[str, Any]]:
    doc = json.loads(value)
    assert (doc["resourceType"], doc["type"]) == ("Bundle", "collection")
    return {e["resource"]["resourceType"]: e["resource"] for e in doc["entry"]}


def another_instance(h: InstanceHeaders, n: int, **changes: Any) -> InstanceHeaders:
    return replace(h, sop_instance_uid=f"{h.sop_instance_uid}.{n}", instance_number=n, **changes)


class TestRealSamplesAreIndexed:
    @pytest.mark.parametrize("name", sorted(INDEXED))
    def test_each_readable_sample_becomes_one_imaging_result(
        self, realdata: Path, name: str
    ) -> None:
        h = headers_of(realdata, name)
        bundle = study_bundle(study_of(SeenInstance(h, T0)), OPTIONS)
        result = one_result(bundle.value)
        modality, site, contrast, started = INDEXED[name]
        assert result.kind is ResultKind.IMAGING
        assert result.business_id == f"ImagingStudy|urn:dicom:uid|urn:oid:{h.study_uid}"
        assert result.status == "available"
        assert not result.timezone_assumed  # every time carries its offset
        (item,) = result.items
        assert item.modality == modality
        assert (item.body_site.code if item.body_site else None) == site
        assert item.contrast is contrast
        assert resources(bundle.value)["ImagingStudy"]["started"] == started
        assert result.version.source_time == T0 and result.version.version_number == 1
        (pid,) = result.patient.identifiers
        assert pid.system == "urn:mrb:hospital:H001:pid:local"
        assert pid.value == h.patient.value and pid.scope is IdentifierScope.HOSPITAL
        assert (bundle.number_of_series, bundle.number_of_instances) == (1, 1)

    @pytest.mark.parametrize("name", sorted(INDEXED))
    def test_every_resource_is_valid_fhir_r4(self, realdata: Path, name: str) -> None:
        bundle = study_bundle(study_of(SeenInstance(headers_of(realdata, name), T0)), OPTIONS)
        get_fhir_model_class("Bundle").model_validate_json(bundle.value)
        for rtype, res in resources(bundle.value).items():
            get_fhir_model_class(rtype).model_validate(res)

    def test_the_imaging_study_says_what_the_broker_needs(self, realdata: Path) -> None:
        h = headers_of(realdata, "dicomdir_77654033_CT2_17106.dcm")
        res = resources(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)
        study, endpoint = res["ImagingStudy"], res["Endpoint"]
        assert study["identifier"][0] == {
            "system": "urn:dicom:uid",
            "value": "urn:oid:1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.1",
        }
        assert study["identifier"][1]["type"]["coding"][0]["code"] == "ACSN"
        assert study["identifier"][1]["value"] == "2"
        assert study["meta"] == {"versionId": "1", "lastUpdated": "2026-05-20T01:00:00.000Z"}
        assert study["extension"] == [
            {"url": "urn:mrb:fhir:extension:contrast", "valueBoolean": False}
        ]
        assert study["modality"] == [
            {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}
        ]
        (series,) = study["series"]
        assert series["bodySite"] == {
            "system": "http://snomed.info/sct",
            "code": "69536005",
            "display": "Head",
        }
        assert (series["number"], series["numberOfInstances"]) == (2, 1)
        assert series["instance"] == [
            {
                "uid": "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.93",
                "sopClass": {
                    "system": "urn:ietf:rfc:3986",
                    "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                },
                "number": 18,
            }
        ]
        assert study["endpoint"] == [{"reference": f"urn:uuid:{endpoint['id']}"}]
        assert endpoint["address"] == "https://pacs.h001.example/dicom-web"
        assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
        assert res["Patient"]["name"] == [
            {"text": "Doe Archibald", "family": "Doe", "given": ["Archibald"]}
        ]

    def test_without_a_wado_base_there_is_no_endpoint(self, realdata: Path) -> None:
        study = study_of(SeenInstance(headers_of(realdata, "MR_small.dcm"), T0))
        res = resources(study_bundle(study, BundleOptions("H001")).value)
        assert "Endpoint" not in res and "endpoint" not in res["ImagingStudy"]


class TestCatalogMatching:
    def test_head_ct_without_contrast_is_the_catalog_plain_head_ct(
        self, realdata: Path, catalog: Catalog
    ) -> None:
        for name in ("dicomdir_77654033_CT2_17106.dcm", "J2K_pixelrep_mismatch.dcm"):
            item = one_result(
                study_bundle(study_of(SeenInstance(headers_of(realdata, name), T0)), OPTIONS).value
            ).items[0]
            assert item.modality and item.body_site
            protocol = study_protocol(item.protocol, item.contrast)
            found = catalog.imaging_item(item.modality, item.body_site.code, protocol)
            assert found is not None and found.code == "IMG-CT-HEAD-PLAIN", name

    @pytest.mark.parametrize(
        ("modality", "term", "contrast", "side", "code"),
        [
            ("CT", "CHEST", True, None, "IMG-CT-CHEST-ENH"),
            ("CT", "THORAX", False, None, "IMG-CT-CHEST-PLAIN"),
            ("CT", "ABDOMEN", False, None, "IMG-CT-ABD-PLAIN"),
            ("CT", "LSPINE", False, None, "IMG-CT-LSPINE-PLAIN"),
            ("MR", "BRAIN", False, None, "IMG-MR-BRAIN-PLAIN"),
            ("MR", "CSPINE", False, None, "IMG-MR-CSPINE-PLAIN"),
            ("MR", "KNEE", False, "L", "IMG-MR-KNEE-PLAIN"),
            ("MR", "SHOULDER", False, "R", "IMG-MR-SHOULDER-PLAIN"),
            ("CR", "CHEST", False, None, "IMG-DR-CHEST"),  # CR and DX are both DR
            ("DX", "HAND", False, "L", "IMG-DR-HAND"),
            ("DX", "WRIST", False, "R", "IMG-DR-WRIST"),
            ("US", "THYROID", False, None, "IMG-US-THYROID"),
            ("US", "BREAST", False, "B", "IMG-US-BREAST"),
            ("US", "HEART", False, None, "IMG-US-HEART"),
            ("MG", "BREAST", False, None, "IMG-MG-BREAST"),
        ],
    )
    def test_body_parts_reach_their_catalog_items(
        self,
        realdata: Path,
        catalog: Catalog,
        modality: str,
        term: str,
        contrast: bool,
        side: str | None,
        code: str,
    ) -> None:
        base = headers_of(realdata, "MR_small.dcm")
        h = replace(base, modality=modality, body_part=term, contrast=contrast, laterality=side)
        (item,) = one_result(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value).items
        assert item.modality and item.body_site
        protocol = study_protocol(item.protocol, item.contrast)
        found = catalog.imaging_item(item.modality, item.body_site.code, protocol)
        assert found is not None and found.code == code
        sides = {"L": "7771000", "R": "24028007", "B": "51440002"}
        assert (item.laterality.code if item.laterality else None) == sides.get(side or "")

    def test_every_catalog_body_site_has_a_defined_term(self, catalog: Catalog) -> None:
        sites = {i.body_site for i in catalog.items.values() if i.body_site}
        assert sites <= {p.code for p in BODY_PARTS.values()}


class TestGrouping:
    def test_two_instances_of_one_study_are_one_imaging_study(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        study = study_of(SeenInstance(another_instance(h, 2), T0), SeenInstance(h, T0))
        bundle = study_bundle(study, OPTIONS)
        imaging = resources(bundle.value)["ImagingStudy"]
        assert (imaging["numberOfSeries"], imaging["numberOfInstances"]) == (1, 2)
        assert [i["number"] for i in imaging["series"][0]["instance"]] == [1, 2]
        assert one_result(bundle.value).business_id.endswith(MR_STUDY)

    def test_series_are_counted_and_ordered_by_number(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        other = another_instance(h, 1, series_uid=f"{h.series_uid}.9", series_number=0)
        imaging = resources(
            study_bundle(study_of(SeenInstance(h, T0), SeenInstance(other, T0)), OPTIONS).value
        )["ImagingStudy"]
        assert imaging["numberOfSeries"] == 2
        assert [s["number"] for s in imaging["series"]] == [0, 1]

    def test_a_study_that_gains_an_instance_is_a_later_version(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        first = SeenInstance(h, T0)
        before = study_bundle(study_of(first), OPTIONS)
        after = study_bundle(
            study_of(first, SeenInstance(another_instance(h, 2), T0 + timedelta(minutes=3))),
            OPTIONS,
        )
        assert after.last_updated > before.last_updated
        assert after.number_of_instances == 2 > before.number_of_instances
        old, new = one_result(before.value), one_result(after.value)
        assert old.business_id == new.business_id
        assert old.version < new.version
        assert resources(after.value)["ImagingStudy"]["meta"] == {
            "versionId": "2",
            "lastUpdated": "2026-05-20T01:03:00.000Z",
        }

    def test_the_same_instances_give_the_same_bytes(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        a, b = SeenInstance(h, T0), SeenInstance(another_instance(h, 2), T0)
        assert (
            study_bundle(study_of(a, b), OPTIONS).value
            == study_bundle(study_of(b, a), OPTIONS).value
        )
        studies = StudySet()
        assert studies.add(a) is True
        assert studies.add(SeenInstance(h, T0 + timedelta(hours=1))) is False  # sent again
        study = studies.get(h.study_uid)
        assert study is not None and study.last_seen == T0

    def test_an_instance_of_another_patient_is_refused(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        intruder = another_instance(h, 2, patient=PatientIdHeader("SOMEONE-ELSE"))
        studies, rejected = group([SeenInstance(h, T0), SeenInstance(intruder, T0)])
        assert len(studies) == 1 and len(studies[0].instances) == 1
        ((inst, error),) = rejected
        assert inst.headers is intruder and error.code is DicomErrorCode.PATIENT_MISMATCH

    def test_a_large_study_lists_counts_without_instances(self, realdata: Path) -> None:
        h = headers_of(realdata, "MR_small.dcm")
        study = study_of(SeenInstance(h, T0), SeenInstance(another_instance(h, 2), T0))
        doc, _ = build_bundle(study, replace(OPTIONS, max_listed_instances=1))
        imaging = next(
            e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "ImagingStudy"
        )
        assert imaging["numberOfInstances"] == 2
        assert "instance" not in imaging["series"][0]


def structured_report(realdata: Path, **attrs: Any) -> InstanceHeaders:
    """The OFFIS SR test document, made part of the MR_small study (same patient)."""
    ds = pydicom.dcmread(realdata / "dicom" / "test-SR.dcm")
    ds.PatientID = "4MR1"
    ds.StudyInstanceUID = MR_STUDY
    for key, value in attrs.items():
        setattr(ds, key, value)
    return extract_headers(ds, zone=SHANGHAI)


class TestReports:
    def test_a_verified_complete_sr_is_the_final_report_of_its_study(self, realdata: Path) -> None:
        image = SeenInstance(headers_of(realdata, "MR_small.dcm"), T0)
        sr = SeenInstance(structured_report(realdata), T0 + timedelta(seconds=5))
        bundle = study_bundle(study_of(image, sr), OPTIONS)
        res = resources(bundle.value)
        report = res["DiagnosticReport"]
        assert report["status"] == "final" and bundle.report_status == "final"
        assert report["imagingStudy"] == [{"reference": f"urn:uuid:{res['ImagingStudy']['id']}"}]
        assert report["issued"] == "2001-02-13T18:47:46+08:00"  # Content Date/Time
        assert report["code"]["text"] == "Diagnosis"  # the SR document title
        assert report["conclusion"].startswith("A mass of\nwas detected.")
        assert res["ImagingStudy"]["numberOfInstances"] == 1  # the SR is not an image
        get_fhir_model_class("DiagnosticReport").model_validate(report)
        result = one_result(bundle.value)
        assert [i.resource_type for i in result.items] == ["ImagingStudy", "DiagnosticReport"]
        assert result.items[1].status == "final" and result.items[1].modality == "MR"

    def test_an_unverified_sr_is_preliminary(self, realdata: Path) -> None:
        image = SeenInstance(headers_of(realdata, "MR_small.dcm"), T0)
        sr = SeenInstance(structured_report(realdata, VerificationFlag="UNVERIFIED"), T0)
        report = resources(study_bundle(study_of(image, sr), OPTIONS).value)["DiagnosticReport"]
        assert report["status"] == "preliminary"

    def test_a_report_without_images_registers_the_study_only(self, realdata: Path) -> None:
        bundle = study_bundle(study_of(SeenInstance(structured_report(realdata), T0)), OPTIONS)
        result = one_result(bundle.value)
        assert result.status == "registered"  # never recognisable until images arrive
        assert result.kind is ResultKind.IMAGING

    def test_an_encapsulated_pdf_report_is_read_without_its_document(self) -> None:
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
        ds.SOPInstanceUID = "1.2.3.4.9"
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesInstanceUID = "1.2.3.4.8"
        ds.PatientID = "P1"
        ds.Modality = "DOC"
        ds.DocumentTitle = "CT 胸部报告"
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.EncapsulatedDocument = b"%PDF-1.4\n" + b"x" * 5000
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        h = read_headers(buf.getvalue(), zone=SHANGHAI)
        report = resources(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)[
            "DiagnosticReport"
        ]
        assert report["status"] == "preliminary"  # a PDF has no verification flag
        assert report["code"]["text"] == "CT 胸部报告"
        assert "conclusion" not in report


def with_other_ids(h: InstanceHeaders, *others: PatientIdHeader) -> InstanceHeaders:
    return replace(h, other_patient_ids=others)


class TestPatient:
    def test_a_resident_id_among_other_ids_links_nationally(self, realdata: Path) -> None:
        # MR_small.dcm's patient is female (PatientSex F, no birth date): a woman's number.
        h = with_other_ids(
            headers_of(realdata, "MR_small.dcm"),
            PatientIdHeader(WOMANS_ID, issuer="身份证"),
            PatientIdHeader("INS-7", issuer="YB"),
        )
        ids = one_result(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)
        found = {(i.system, i.value, i.scope) for i in ids.patient.identifiers}
        assert found == {
            ("urn:mrb:hospital:H001:pid:local", "4MR1", IdentifierScope.HOSPITAL),
            (RESIDENT_ID_SYSTEM, WOMANS_ID, IdentifierScope.NATIONAL),
            ("urn:mrb:hospital:H001:pid:YB", "INS-7", IdentifierScope.HOSPITAL),
        }

    def test_a_resident_id_the_record_contradicts_links_only_at_its_hospital(
        self, realdata: Path
    ) -> None:
        # RESIDENT_ID is a man's number (17th digit odd); the DICOM patient is female.
        h = with_other_ids(
            headers_of(realdata, "MR_small.dcm"), PatientIdHeader(RESIDENT_ID, issuer="身份证")
        )
        ids = one_result(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)
        found = {(i.system, i.value, i.scope, i.hospital) for i in ids.patient.identifiers}
        assert (RESIDENT_ID_SYSTEM, RESIDENT_ID, IdentifierScope.HOSPITAL, "H001") in found
        assert all(i.scope is IdentifierScope.HOSPITAL for i in ids.patient.identifiers)

    def test_a_patient_id_issued_as_resident_id_is_national(self, realdata: Path) -> None:
        h = replace(
            headers_of(realdata, "MR_small.dcm"),
            patient=PatientIdHeader(RESIDENT_ID.lower(), issuer="SFZH"),
        )
        (ident,) = one_result(
            study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value
        ).patient.identifiers
        assert (ident.system, ident.value) == (RESIDENT_ID_SYSTEM, RESIDENT_ID)

    def test_a_universal_entity_id_names_the_resident_id_too(self, realdata: Path) -> None:
        other = PatientIdHeader(RESIDENT_ID, universal_id="2.16.156.10011.1.3")
        h = with_other_ids(headers_of(realdata, "MR_small.dcm"), other)
        res = resources(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)
        assert {"system": RESIDENT_ID_SYSTEM, "value": RESIDENT_ID} in res["Patient"]["identifier"]

    def test_a_bad_check_digit_is_left_out_with_a_warning(self, realdata: Path) -> None:
        bad = RESIDENT_ID[:-1] + "4"
        h = with_other_ids(headers_of(realdata, "MR_small.dcm"), PatientIdHeader(bad, "SFZ"))
        bundle = study_bundle(study_of(SeenInstance(h, T0)), OPTIONS)
        assert bad.encode() not in bundle.value
        assert bundle.warnings == (
            "Other Patient ID #1 is marked as a resident ID but fails GB 11643",
        )
        assert len(one_result(bundle.value).patient.identifiers) == 1

    def test_other_ids_without_an_issuer_are_not_published(self, realdata: Path) -> None:
        h = headers_of(realdata, "CT_small.dcm")  # ABCD1234 and 1234ABCD, no issuer
        value = study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value
        assert b"ABCD1234" not in value and b"1234ABCD" not in value

    def test_issuers_become_uri_safe_systems(self, realdata: Path) -> None:
        h = replace(
            headers_of(realdata, "MR_small.dcm"),
            patient=PatientIdHeader("0001", issuer="泸州 HIS"),
        )
        (ident,) = one_result(
            study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value
        ).patient.identifiers
        assert ident.system == "urn:mrb:hospital:H001:pid:%E6%B3%B8%E5%B7%9E%20HIS"

    def test_names_sex_and_birth_date(self, realdata: Path) -> None:
        h = replace(
            headers_of(realdata, "MR_small.dcm"),
            patient_name="Wang^XiaoDong",
            patient_name_ideographic="王^小东",
            birth_date=date(1990, 3, 7),
        )
        patient = resources(study_bundle(study_of(SeenInstance(h, T0)), OPTIONS).value)["Patient"]
        assert patient["name"] == [
            {"text": "Wang XiaoDong", "family": "Wang", "given": ["XiaoDong"]},
            {"text": "王小东", "family": "王", "given": ["小东"]},
        ]
        assert (patient["gender"], patient["birthDate"]) == ("female", "1990-03-07")

    def test_a_pn_with_ideographic_groups_is_read_from_dicom(self) -> None:
        ds = Dataset()
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5.6"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
        ds.PatientID = "P1"
        ds.PatientName = "Wang^XiaoDong=王^小东"
        ds.OtherPatientIDsSequence = Sequence()
        h = extract_headers(ds, zone=SHANGHAI)
        assert (h.patient_name, h.patient_name_ideographic) == ("Wang^XiaoDong", "王^小东")
