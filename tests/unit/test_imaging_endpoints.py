"""Where a study's images open: ImagingStudy.endpoint kept at ingest, checked, served.

Endpoints contained in the study, sent in the same Bundle, or named by an absolute URL;
addresses that are not http(s), carry credentials or a patient identifier are left out
with a warning, and the result is indexed all the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker.fhir.resources import ResultInfo, ResultView
from broker.ingest.fhir_bundle import BundleIndex, Entry
from broker.ingest.imaging_endpoints import (
    CONNECTION_TYPES,
    address_problem,
    images_link,
    study_endpoints,
    study_uid,
)
from broker.ingest.parse import parse_message
from tests import factories as f

SHANGHAI = ZoneInfo("Asia/Shanghai")
UID = "1.2.3.4"
RID = "7d0c6a52-3a51-4a49-8f0e-1f7b8f5c9a10"
PID = "2e4c9f0a-8b4d-4d1e-9a55-3c1f0e6b7d21"
AT = datetime(2026, 5, 18, 4, 0, tzinfo=UTC)
VIEWER = "https://pacs.h001.example/viewer"
WADO = "https://pacs.h001.example/dicom-web"


def endpoint(address: str, kind: str = "dicom-wado-rs", eid: str = "ep1", **more: Any) -> dict:
    return {
        "resourceType": "Endpoint",
        "id": eid,
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPES, "code": kind},
        "payloadType": [{"text": "DICOM"}],
        "address": address,
        **more,
    }


def imaging_with_endpoints(
    *,
    bundled: list[dict[str, Any]] = (),  # type: ignore[assignment]
    contained: list[dict[str, Any]] = (),  # type: ignore[assignment]
    refs: list[str] | None = None,
    series_refs: list[str] = (),  # type: ignore[assignment]
    **study: Any,
) -> bytes:
    """f.imaging_bundle with Endpoints in the Bundle (fullUrl urn:uuid:<id>) and/or
    contained in the study; `refs` default: every one of them."""
    doc = json.loads(f.imaging_bundle(**study))
    res = next(
        e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "ImagingStudy"
    )
    if contained:
        res["contained"] = list(contained)
    if refs is None:
        refs = [f"#{c['id']}" for c in contained] + [f"urn:uuid:{b['id']}" for b in bundled]
    if refs:
        res["endpoint"] = [{"reference": r} for r in refs]
    if series_refs:
        res["series"][0]["endpoint"] = [{"reference": r} for r in series_refs]
    doc["entry"] += [{"fullUrl": f"urn:uuid:{b['id']}", "resource": b} for b in bundled]
    return json.dumps(doc, ensure_ascii=False).encode()


def parsed_study(value: bytes) -> Any:
    parsed = parse_message(value, hospital="H001", zone=SHANGHAI)
    (result,) = parsed.results
    return parsed, result


def view_of(value: bytes) -> ResultView:
    info = ResultInfo(
        RID, "ImagingStudy", f"ImagingStudy|urn:dicom:uid|urn:oid:{UID}", "H001", PID, AT
    )
    return ResultView(json.loads(value), info)


class TestAddresses:
    @pytest.mark.parametrize(
        "url",
        [
            "https://pacs.example/dicom-web",
            "http://10.0.0.5:8080/wado?requestType=WADO&studyUID=1.2.3",
            "https://pacs.example/viewer?studyUID=1.2.840.113619.2.55.3.604688119.968",
            "https://pacs.example/viewer?accessionNumber=A123",
        ],
    )
    def test_http_and_https_addresses_are_kept(self, url: str) -> None:
        assert address_problem(url) is None

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("javascript:alert(1)", "only http and https"),
            ("JavaScript:alert(document.cookie)", "only http and https"),
            ("data:text/html,<script>alert(1)</script>", "only http and https"),
            ("ftp://pacs.example/study", "only http and https"),
            ("/viewer/study/1.2.3", "not absolute"),
            ("viewer.html?study=1", "not absolute"),
            ("//pacs.example/viewer", "not absolute"),
            ("https://", "no host"),
            ("https://user:secret@pacs.example/wado", "credentials"),
            (" https://pacs.example/wado", "spaces"),
            ("https://pacs.example/wa do", "spaces"),
            ("https://pacs.example:99999/wado", "not a valid URL"),
            ("", "no address"),
            (None, "no address"),
        ],
    )
    def test_other_addresses_are_refused(self, url: object, why: str) -> None:
        problem = address_problem(url)
        assert problem is not None and why in problem

    @pytest.mark.parametrize(
        "url",
        [
            "https://pacs.example/viewer?PatientID=12345&studyUID=1.2.3",
            "https://pacs.example/viewer?patient_id=12345",
            "https://pacs.example/viewer?MRN=A-1",
            "https://pacs.example/viewer?sfzh=x",
            "https://pacs.example/viewer?patientName=WANG",
            f"https://pacs.example/viewer?q={f.PATIENT_A}",
            f"https://pacs.example/patients/{f.PATIENT_A}/studies/1.2.3",
        ],
    )
    def test_addresses_naming_the_patient_are_refused(self, url: str) -> None:
        problem = address_problem(url)
        assert problem is not None and ("identifier" in problem or "resident ID" in problem)
        assert "12345" not in problem and f.PATIENT_A not in problem  # never quoted

    def test_an_18_digit_uid_component_that_is_no_resident_id_is_kept(self) -> None:
        assert address_problem("https://pacs.example/studies/1.2.123456789012345678") is None


class TestExtraction:
    def test_a_contained_endpoint(self) -> None:
        value = imaging_with_endpoints(contained=[endpoint(WADO)])
        parsed, result = parsed_study(value)
        assert parsed.warnings == ()
        assert {i.images for i in result.items} == {f"{WADO}/studies/{UID}"}

    def test_an_endpoint_in_the_bundle(self) -> None:
        value = imaging_with_endpoints(bundled=[endpoint(VIEWER, "ihe-iid")])
        _, result = parsed_study(value)
        assert result.items[0].images == f"{VIEWER}?requestType=STUDY&studyUID={UID}"
        # The study's report item carries the link too (a candidate may be either).
        assert [i.resource_type for i in result.items] == ["ImagingStudy", "DiagnosticReport"]
        assert result.items[1].images == result.items[0].images

    def test_a_viewer_is_preferred_to_an_archive_and_series_endpoints_count(self) -> None:
        value = imaging_with_endpoints(
            bundled=[endpoint(WADO, eid="wado"), endpoint(VIEWER, "ihe-iid", eid="iid")],
            refs=["urn:uuid:wado"],
            series_refs=["urn:uuid:iid"],
        )
        _, result = parsed_study(value)
        assert result.items[0].images.startswith(VIEWER)

    def test_an_address_naming_the_study_is_used_as_sent(self) -> None:
        study_url = f"{WADO}/studies/{UID}"
        _, result = parsed_study(imaging_with_endpoints(contained=[endpoint(study_url)]))
        assert result.items[0].images == study_url
        iid = f"{VIEWER}?study={UID}"
        _, result = parsed_study(imaging_with_endpoints(contained=[endpoint(iid, "ihe-iid")]))
        assert result.items[0].images == iid

    def test_an_external_absolute_reference_is_kept_as_its_url_but_opens_nothing(self) -> None:
        external = "https://fhir.h001.example/fhir/Endpoint/wado"
        value = imaging_with_endpoints(refs=[external])
        parsed, result = parsed_study(value)
        assert parsed.warnings == () and result.items[0].images is None
        doc = json.loads(value)
        index = BundleIndex([Entry(e["resource"], e["fullUrl"]) for e in doc["entry"]])
        study = doc["entry"][1]["resource"]
        found = study_endpoints(study, index, where="ImagingStudy")
        assert [(e.kind, e.address) for e in found.endpoints] == [("external", external)]

    @pytest.mark.parametrize(
        "address",
        [
            "javascript:alert(1)",
            "data:text/html,x",
            "/viewer/1",
            "https://pacs.example/v?PatientID=7",
        ],
    )
    def test_a_bad_endpoint_is_left_out_with_a_warning_and_the_result_indexed(
        self, address: str
    ) -> None:
        value = imaging_with_endpoints(contained=[endpoint(address, "ihe-iid")])
        parsed, result = parsed_study(value)
        assert result.items[0].images is None
        (warning,) = parsed.warnings
        assert warning.startswith("ImagingStudy.endpoint[0]: ") and "left out" in warning
        assert address not in warning and "PatientID=7" not in warning

    def test_unresolvable_and_wrong_references_are_left_out(self) -> None:
        value = imaging_with_endpoints(
            refs=["#nothing", "Endpoint/elsewhere", "urn:uuid:patient", "javascript:alert(1)"]
        )
        parsed, result = parsed_study(value)
        assert result.items[0].images is None
        assert len(parsed.warnings) == 4
        assert "refers to a Patient" in parsed.warnings[2]

    def test_an_inactive_endpoint_or_another_connection_type_opens_nothing(self) -> None:
        off = endpoint(WADO, status="off")
        _, result = parsed_study(imaging_with_endpoints(contained=[off]))
        assert result.items[0].images is None
        qido = endpoint(WADO, "dicom-qido-rs")
        _, result = parsed_study(imaging_with_endpoints(contained=[qido]))
        assert result.items[0].images is None

    def test_no_endpoint_no_link_and_lab_results_have_none(self) -> None:
        _, result = parsed_study(f.imaging_bundle())
        assert all(i.images is None for i in result.items)
        (lab,) = parse_message(f.lab_bundle(), hospital="H001", zone=SHANGHAI).results
        assert all(i.images is None for i in lab.items)

    def test_the_study_uid_is_read_from_the_dicom_identifier_only_when_it_is_a_uid(
        self,
    ) -> None:
        assert (
            study_uid({"identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2"}]})
            == "1.2"
        )
        bad = {"identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2/../x"}]}
        assert study_uid(bad) is None
        assert images_link((), "1.2") is None


class TestServing:
    def test_bundled_and_contained_endpoints_are_served_as_endpoints(self) -> None:
        value = imaging_with_endpoints(
            bundled=[endpoint(VIEWER, "ihe-iid", eid="iid")],
            contained=[endpoint(WADO, eid="wado", header=["Authorization: Bearer s3cret"])],
        )
        view = view_of(value)
        assert view.main is not None and len(view.endpoints) == 2
        study = view.render(view.main, viewer="H002")
        assert "contained" not in study
        refs = [r["reference"] for r in study["endpoint"]]
        assert refs == [f"Endpoint/{e.served_id}" for e in view.endpoints]
        for e in view.endpoints:
            served = view.render(view.get(e.served_id), viewer="H002")  # type: ignore[arg-type]
            assert served["resourceType"] == "Endpoint" and served["id"] == e.served_id
            assert served["meta"]["source"] == "H001"
            assert "header" not in served  # an archive's request headers may hold secrets
        rows = {r.served_id: r for r in view.index_rows(SHANGHAI)}
        assert {rows[e.served_id].resource_type for e in view.endpoints} == {"Endpoint"}
        # Stable ids across versions of the result.
        again = view_of(value)
        assert [e.served_id for e in again.endpoints] == [e.served_id for e in view.endpoints]

    def test_bad_endpoints_are_dropped_and_external_ones_kept_as_urls(self) -> None:
        external = "https://fhir.h001.example/fhir/Endpoint/wado"
        value = imaging_with_endpoints(
            contained=[endpoint("javascript:alert(1)", eid="bad")],
            refs=["#bad", external, "Endpoint/nowhere"],
        )
        view = view_of(value)
        assert view.endpoints == []
        study = view.render(view.main, viewer="H001")  # type: ignore[arg-type]
        assert study["endpoint"] == [{"reference": external}]
        assert "contained" not in study
        assert "javascript" not in json.dumps(study)

    def test_a_withdrawn_studys_endpoints_are_withdrawn(self) -> None:
        value = imaging_with_endpoints(contained=[endpoint(WADO)], status="entered-in-error")
        view = view_of(value)
        rows = {r.served_id: r for r in view.index_rows(SHANGHAI)}
        assert rows[view.endpoints[0].served_id].status == "entered-in-error"

    def test_a_study_without_endpoints_is_served_as_before(self) -> None:
        view = view_of(f.imaging_bundle())
        study = view.render(view.main, viewer="H001")  # type: ignore[arg-type]
        assert "endpoint" not in study and view.endpoints == []
