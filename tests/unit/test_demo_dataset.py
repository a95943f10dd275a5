"""The demo data set: deterministic, valid FHIR R4, and it tells the story it promises."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from broker.demo.catalog_sample import LAB_PANELS
from broker.demo.dataset import (
    NATIONAL_ID_SYSTEM,
    RECOGNITION_MARK_URL,
    DemoDataset,
    DemoMessage,
    demo_hospitals,
    generate,
    resident_id_check_digit,
)
from broker.domain.rejections import RejectCode

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 5, 20, 9, 41, 17, tzinfo=CST)
CODES = {
    "MALFORMED_JSON",
    "NOT_FHIR",
    "UNSUPPORTED_RESOURCE_TYPE",
    "PATIENT_NOT_IDENTIFIED",
    "UNKNOWN_HOSPITAL",
    "INVALID_ENCODING",
    "NESTING_TOO_DEEP",
    "MESSAGE_TOO_LARGE",
    "UNSUPPORTED_FHIR_VERSION",
    "INVALID_PATIENT_IDENTIFIER",
}
ZONELESS = re.compile(r'"(effectiveDateTime|started)":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)"')
DATETIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
Json = dict[str, Any]


@pytest.fixture(scope="module")
def data() -> DemoDataset:
    return generate(now=NOW)


def indexed(data: DemoDataset) -> list[DemoMessage]:
    return [m for m in data.messages if m.expect == "indexed"]


def resources(message: DemoMessage) -> list[Json]:
    return [e["resource"] for e in json.loads(message.value)["entry"]]


def of_type(message: DemoMessage, kind: str) -> list[Json]:
    return [r for r in resources(message) if r["resourceType"] == kind]


def main_resource(message: DemoMessage) -> Json:
    """The resource that identifies the result: the ImagingStudy, else the report."""
    return (of_type(message, "ImagingStudy") or of_type(message, "DiagnosticReport"))[0]


def result_identity(message: DemoMessage) -> str:
    return f"{message.hospital}|{main_resource(message)['identifier'][0]['value']}"


def national_ids(message: DemoMessage) -> list[str]:
    return [
        i["value"]
        for p in of_type(message, "Patient")
        for i in p["identifier"]
        if i.get("system") == NATIONAL_ID_SYSTEM
    ]


def valid_id(number: str) -> bool:
    return (
        bool(re.fullmatch(r"\d{17}[\dX]", number))
        and resident_id_check_digit(number[:17]) == number[17]
    )


# --- determinism ------------------------------------------------------------------------


def test_same_inputs_give_identical_messages(data: DemoDataset) -> None:
    assert generate(now=NOW) == data


def test_different_seed_differs(data: DemoDataset) -> None:
    other = generate(now=NOW, seed=7)
    assert [m.value for m in other.messages] != [m.value for m in data.messages]


def test_different_now_only_moves_dates(data: DemoDataset) -> None:
    later = generate(now=NOW + timedelta(days=1))

    def shift(match: re.Match[str]) -> str:
        moment = datetime.fromisoformat(match.group(1)) + timedelta(days=1)
        return moment.isoformat(timespec="seconds")

    assert len(later.messages) == len(data.messages)
    for before, after in zip(data.messages, later.messages, strict=True):
        assert (after.message_id, after.key, after.note) == (
            before.message_id,
            before.key,
            before.note,
        )
        if before.expect_code in ("INVALID_ENCODING", "NESTING_TOO_DEEP"):
            assert after.value == before.value
            continue
        assert after.value.decode() == DATETIME.sub(shift, before.value.decode())


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(now=datetime(2026, 5, 20, 9, 0))


# --- counts and headers ---------------------------------------------------------------


def test_hospitals() -> None:
    hospitals = demo_hospitals()
    assert [h.id for h in hospitals] == ["H001", "H002", "H003", "H004"]
    assert [h.level for h in hospitals] == ["3", "3", "2", "1"]
    assert {h.region[:4] for h in hospitals[:3]} == {"5105"}
    assert not hospitals[3].region.startswith("51")
    assert all(re.fullmatch(r"\d{6}", h.region) for h in hospitals)


def test_counts_and_codes(data: DemoDataset) -> None:
    assert len(data.hospitals) >= 3
    assert len(data.patients) == 240
    assert len({p.national_id for p in data.patients}) == 240
    registered = {h.id for h in data.hospitals}
    codes = Counter(m.expect_code for m in data.messages if m.expect == "rejected")
    assert set(codes) == CODES
    assert set(codes.values()) == {1}
    assert {c.value for c in RejectCode} >= CODES
    for m in data.messages:
        assert m.expect in ("indexed", "rejected")
        assert (m.expect_code is None) == (m.expect == "indexed")
        assert (m.hospital == "H999") == (m.expect_code == "UNKNOWN_HOSPITAL")
        assert m.hospital in registered or m.hospital == "H999"
        assert m.content_type.endswith("fhirVersion=3.0") == (
            m.expect_code == "UNSUPPORTED_FHIR_VERSION"
        )
    assert len(indexed(data)) >= 600


def test_message_ids_are_unique_uuids(data: DemoDataset) -> None:
    ids = [m.message_id for m in data.messages]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)


def test_bad_messages_are_spread_out(data: DemoDataset) -> None:
    positions = [i for i, m in enumerate(data.messages) if m.expect == "rejected"]
    gaps = [b - a for a, b in pairwise([0, *positions, len(data.messages)])]
    assert min(gaps) >= len(data.messages) // 20


# --- identifiers and privacy ----------------------------------------------------------


@pytest.mark.parametrize("number", ["11010519491231002X", "440524188001010014"])
def test_check_digit_of_known_ids(number: str) -> None:
    assert resident_id_check_digit(number[:17]) == number[17]


def test_check_digit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="17 digits"):
        resident_id_check_digit("1234")


def test_only_the_deliberate_id_has_a_bad_check_digit(data: DemoDataset) -> None:
    assert all(valid_id(p.national_id) for p in data.patients)
    invalid = []
    for m in data.messages:
        try:
            invalid += [(m.expect_code, n) for n in national_ids(m) if not valid_id(n)]
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # the deliberately unparseable messages
    assert [code for code, _ in invalid] == ["INVALID_PATIENT_IDENTIFIER"]


def test_patient_demographics_match_the_id_number(data: DemoDataset) -> None:
    for m in indexed(data):
        (patient,) = of_type(m, "Patient")
        for number in national_ids(m):
            assert patient["birthDate"].replace("-", "") == number[6:14]
            assert patient["gender"] == ("male" if int(number[16]) % 2 else "female")
            assert 1940 <= int(number[6:10]) <= 2015


def test_no_identifier_or_name_in_keys_or_notes(data: DemoDataset) -> None:
    secrets = {p.national_id for p in data.patients}
    for m in indexed(data):
        for patient in of_type(m, "Patient"):
            secrets |= {n["text"] for n in patient["name"]}
            secrets |= {i["value"] for i in patient["identifier"]}
    for m in data.messages:
        assert re.fullmatch(rb"[0-9a-f]{16}", m.key)
        assert m.note.isascii()
        assert not any(s in m.note or s.encode() in m.key for s in secrets)


def test_keys_follow_patient_and_hospital(data: DemoDataset) -> None:
    by_mrn: dict[str, set[bytes]] = defaultdict(set)
    for m in indexed(data):
        (patient,) = of_type(m, "Patient")
        by_mrn[patient["identifier"][-1]["value"]].add(m.key)
    assert all(len(keys) == 1 for keys in by_mrn.values())
    assert len(set().union(*by_mrn.values())) == len(by_mrn)


# --- FHIR validity --------------------------------------------------------------------


def validate(value: bytes) -> None:
    Bundle.model_validate_json(value)  # validates every entry's resource too (see below)


def test_bundle_validation_reaches_the_entries(data: DemoDataset) -> None:
    bundle = json.loads(indexed(data)[0].value)
    bundle["entry"][1]["resource"]["subject"] = "not a Reference"
    with pytest.raises(ValidationError, match=r"entry\.1\.resource\.subject"):
        Bundle.model_validate(bundle)


def test_indexed_messages_are_valid_r4(data: DemoDataset) -> None:
    zoneless = 0
    for m in indexed(data):
        assert m.content_type == "application/fhir+json; fhirVersion=4.0"
        text = m.value.decode()
        if "zone-less" in m.note:
            # FHIR requires a zone once a time is given; the broker applies the hospital's
            # configured zone instead. Only those fields may break R4 validation.
            zoneless += 1
            with pytest.raises(ValidationError) as err:
                validate(m.value)
            assert all(e["loc"][-1] in ("effectiveDateTime", "started") for e in err.value.errors())
            text = ZONELESS.sub(r'"\1":"\2+08:00"', text)
        else:
            assert not ZONELESS.search(text)
        validate(text.encode())
    assert 3 <= zoneless <= 10


def test_bundle_shape(data: DemoDataset) -> None:
    for m in indexed(data):
        bundle = json.loads(m.value)
        assert bundle["type"] in ("collection", "transaction")
        urls = {e["fullUrl"] for e in bundle["entry"]}
        assert all(u.startswith("urn:uuid:") for u in urls)
        kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
        assert kinds["Patient"] == 1
        if kinds["ImagingStudy"]:
            assert set(kinds) <= {"Patient", "ImagingStudy", "DiagnosticReport"}
            assert kinds["ImagingStudy"] == 1
            assert kinds["DiagnosticReport"] <= 1
        else:
            assert set(kinds) == {"Patient", "DiagnosticReport", "Observation"}
            assert kinds["DiagnosticReport"] == 1
        for entry in bundle["entry"]:
            r = entry["resource"]
            assert entry["fullUrl"] == f"urn:uuid:{r['id']}"
            assert r["meta"]["versionId"] in ("1", "2")
            assert r["meta"]["lastUpdated"]
            if bundle["type"] == "transaction":
                assert entry["request"]["method"] == "PUT"
        references = re.findall(r'"reference":"([^"]+)"', m.value.decode())
        assert references
        assert set(references) <= urls


def test_timestamps_are_china_time_and_in_the_past(data: DemoDataset) -> None:
    for m in indexed(data):
        for stamp in re.findall(r'"(\d{4}-\d\d-\d\dT[^"]+)"', m.value.decode()):
            moment = datetime.fromisoformat(stamp)
            assert moment.tzinfo is not None or "zone-less" in m.note
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=CST)
            assert stamp.endswith("+08:00") or moment.tzinfo == CST
            assert NOW - timedelta(days=402) <= moment < NOW


def test_lab_content(data: DemoDataset) -> None:
    marks = {"H001": "全国HR", "H002": "全国HR", "H003": "泸州HR", "H004": "苏HR"}
    local = 0
    panels = {
        c["code"]
        for m in indexed(data)
        for r in of_type(m, "DiagnosticReport")
        for c in r["code"]["coding"]
    }
    assert {p.loinc for p in LAB_PANELS} <= panels
    for m in indexed(data):
        for obs in of_type(m, "Observation"):
            assert obs["extension"] == [
                {"url": RECOGNITION_MARK_URL, "valueString": marks[m.hospital]}
            ]
            system = obs["code"]["coding"][0]["system"]
            if system != "http://loinc.org":
                assert (m.hospital, system) == ("H002", "urn:mrb:hospital:H002:lab-code")
                local += 1
            if "valueQuantity" in obs:
                assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
                assert obs["referenceRange"][0]["low"]["unit"] == obs["valueQuantity"]["unit"]
            else:
                assert obs["valueCodeableConcept"]["coding"][0]["code"] in ("10828004", "260385009")
        for report in of_type(m, "DiagnosticReport"):
            assert report["identifier"][0]["system"] in (
                f"urn:mrb:hospital:{m.hospital}:lab-report",
                f"urn:mrb:hospital:{m.hospital}:imaging-report",
            )
            assert report["performer"][0]["display"]
    assert 4 <= local <= 40


def test_imaging_content(data: DemoDataset) -> None:
    seen = set()
    for m in indexed(data):
        for study in of_type(m, "ImagingStudy"):
            uid, accession = study["identifier"]
            assert re.fullmatch(r"urn:oid:2\.25\.\d+", uid["value"])
            assert accession["type"]["coding"][0]["code"] == "ACSN"
            modality = study["modality"][0]["code"]
            site = study["series"][0]["bodySite"]["code"]
            sides = {s.get("laterality", {}).get("code") for s in study["series"]}
            contrast = {
                "url": "urn:mrb:fhir:extension:contrast",
                "valueBoolean": True,
            } in study.get("extension", [])
            assert contrast == ("增强" in study["procedureCode"][0]["text"])
            assert study["numberOfInstances"] == sum(
                s["numberOfInstances"] for s in study["series"]
            )
            seen.add((modality, site, contrast, *sorted(sides, key=str)))
            if modality in ("DX", "CR"):
                assert modality == ("CR" if m.hospital in ("H003", "H004") else "DX")
    assert {
        ("CT", "69536005", False, None),
        ("CT", "51185008", False, None),
        ("CT", "51185008", True, None),
        ("MR", "12738006", False, None),
        ("MR", "72696002", False, "7771000"),
        ("MR", "72696002", False, "24028007"),
        ("US", "818983003", False, None),
    } <= seen
    assert {s for s in seen if s[0] in ("DX", "CR")}


def test_a_few_transaction_bundles(data: DemoDataset) -> None:
    count = sum(json.loads(m.value)["type"] == "transaction" for m in indexed(data))
    assert 3 <= count <= 30


# --- the story: repeats, MRN-only identity, versions --------------------------------


def test_many_patients_tested_at_several_hospitals(data: DemoDataset) -> None:
    multi = [p for p in data.patients if len(p.hospitals) >= 2]
    assert len(multi) >= 0.4 * len(data.patients)
    assert all(1 <= len(p.hospitals) <= 3 for p in data.patients)
    # Every listed hospital really sent results for that patient (checked via the MRNs).
    mrn_hospitals: dict[str, set[str]] = defaultdict(set)
    same_item_elsewhere = set()
    items: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for m in indexed(data):
        (number,) = national_ids(m) or [""]
        if number:
            mrn_hospitals[number].add(m.hospital)
            main = main_resource(m)
            code = main.get("procedureCode", [main.get("code")])[0]["coding"][0]["code"]
            items[number][code].add(m.hospital)
            if len(items[number][code]) > 1:
                same_item_elsewhere.add(number)
    assert all(set(p.hospitals) == mrn_hospitals[p.national_id] for p in data.patients)
    assert len(same_item_elsewhere) >= 0.2 * len(data.patients)


def test_mrn_only_messages_follow_a_full_one(data: DemoDataset) -> None:
    known: set[str] = set()
    mrn_only = 0
    for m in indexed(data):
        (patient,) = of_type(m, "Patient")
        mrn = patient["identifier"][-1]
        assert mrn["type"]["coding"][0]["code"] == "MR"
        assert mrn["system"] == f"urn:oid:2.16.156.10011.0.{int(m.hospital[1:])}.mrn"
        assert mrn["value"].startswith(m.hospital + "-")
        if national_ids(m):
            known.add(mrn["value"])
        else:
            mrn_only += 1
            assert mrn["value"] in known
            assert "MRN only" in m.note
    assert 0.07 <= mrn_only / len(indexed(data)) <= 0.13


def versions(data: DemoDataset) -> dict[str, list[tuple[int, DemoMessage]]]:
    found: dict[str, list[tuple[int, DemoMessage]]] = defaultdict(list)
    for i, m in enumerate(data.messages):
        if m.expect == "indexed":
            found[result_identity(m)].append((i, m))
    return found


def status_of(message: DemoMessage) -> str:
    return str(main_resource(message)["status"])


def test_amendments_withdrawals_and_out_of_order(data: DemoDataset) -> None:
    statuses: Counter[str] = Counter()
    out_of_order = 0
    for sent in versions(data).values():
        by_version = {main_resource(m)["meta"]["versionId"]: (i, m) for i, m in sent}
        if "2" not in by_version:
            continue
        (i1, v1), (i2, v2) = by_version["1"], by_version["2"]
        statuses[status_of(v2)] += 1
        out_of_order += i2 < i1
        main1, main2 = main_resource(v1), main_resource(v2)
        assert main2["meta"]["lastUpdated"] > main1["meta"]["lastUpdated"]
        assert status_of(v1) in ("final", "available")
        if status_of(v2) in ("amended", "corrected"):
            values1 = [o.get("valueQuantity") for o in of_type(v1, "Observation")]
            values2 = [o.get("valueQuantity") for o in of_type(v2, "Observation")]
            assert sum(a != b for a, b in zip(values1, values2, strict=True)) == 1
            assert "sent before original" in v2.note or i1 < i2
        else:
            assert i1 < i2
    assert statuses == {"amended": 6, "corrected": 2, "entered-in-error": 2, "cancelled": 2}
    assert out_of_order == 3


def test_exactly_one_exact_duplicate(data: DemoDataset) -> None:
    values = Counter(m.value for m in indexed(data))
    duplicated = [v for v, n in values.items() if n > 1]
    assert len(duplicated) == 1
    copies = [m for m in indexed(data) if m.value == duplicated[0]]
    assert len({m.message_id for m in copies}) == 2
    assert len({m.key for m in copies}) == 1
    assert "exact duplicate" in copies[1].note


# --- the bad messages -------------------------------------------------------------------


def bad(data: DemoDataset, code: str) -> DemoMessage:
    (message,) = [m for m in data.messages if m.expect_code == code]
    return message


def test_bad_messages_fail_for_their_own_reason_only(data: DemoDataset) -> None:
    truncated = bad(data, "MALFORMED_JSON").value.decode()  # still valid UTF-8
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated)
    assert "resourceType" not in json.loads(bad(data, "NOT_FHIR").value)
    with pytest.raises(UnicodeDecodeError):
        bad(data, "INVALID_ENCODING").value.decode()
    deep = bad(data, "NESTING_TOO_DEEP").value
    assert deep.count(b"[") == 5000
    assert deep.startswith(b'{"resourceType":"Bundle"')
    large = bad(data, "MESSAGE_TOO_LARGE").value
    assert len(large) > 2 * 1024 * 1024
    assert json.loads(large)["resourceType"] == "Bundle"
    medication = json.loads(bad(data, "UNSUPPORTED_RESOURCE_TYPE").value)
    get_fhir_model_class("Medication").model_validate(medication)
    stu3 = json.loads(bad(data, "UNSUPPORTED_FHIR_VERSION").value)
    assert "patient" in stu3
    assert "subject" not in stu3
    assert stu3["uid"].startswith("urn:oid:")
    assert isinstance(stu3["series"][0]["instance"][0]["sopClass"], str)
    for code in ("UNKNOWN_HOSPITAL", "PATIENT_NOT_IDENTIFIED", "INVALID_PATIENT_IDENTIFIER"):
        validate(bad(data, code).value)  # good FHIR: rejected for semantic reasons only
    unidentified = bad(data, "PATIENT_NOT_IDENTIFIED")
    assert not of_type(unidentified, "Patient")
    assert {r["subject"]["reference"] for r in resources(unidentified)} == {"Patient/unknown-123"}
    (patient,) = of_type(bad(data, "INVALID_PATIENT_IDENTIFIER"), "Patient")
    assert [i["system"] for i in patient["identifier"]] == [NATIONAL_ID_SYSTEM]


@pytest.mark.parametrize("patients", [20, 50])
def test_a_small_data_set_keeps_the_story(patients: int) -> None:
    small = generate(now=NOW, seed=3, patients=patients)
    assert len(small.patients) == patients
    test_amendments_withdrawals_and_out_of_order(small)
    test_exactly_one_exact_duplicate(small)
    test_bad_messages_fail_for_their_own_reason_only(small)
    test_only_the_deliberate_id_has_a_bad_check_digit(small)
    test_bundle_shape(small)


def test_too_few_patients_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        generate(now=NOW, patients=5)
