"""ORU^R01 -> FHIR on synthetic messages: each edge case the real samples do not cover."""

from __future__ import annotations

import logging
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.oru import MappedMessage, map_message
from broker.domain.identifiers import IdentifierScope
from broker.domain.results import ExtractedResult
from broker.ingest.parse import parse_message

Json = dict[str, Any]
SHANGHAI = ZoneInfo("Asia/Shanghai")
RESIDENT_ID = "11010519491231002X"  # valid GB 11643 check digit
NATIONAL = "urn:oid:2.16.156.10011.1.3"
UCUM = "http://unitsofmeasure.org"

MSH = "MSH|^~\\&|LIS|LAB|MRB|H001|20260518103000||ORU^R01^ORU_R01|MSG0001|P|2.5.1"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with the given fields (1-based), empty elsewhere."""
    values = [fields.get(i, "") for i in range(1, max(fields) + 1)] if fields else []
    return "|".join([name, *values])


PID = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "Zhang^San", 7: "19800101", 8: "F"})
OBR = seg(
    "OBR",
    {
        1: "1",
        2: "PL1^HIS",
        3: "FL1^LIS",
        4: "CBC^Blood count^L",
        7: "20260518083000",
        22: "20260518100000",
        25: "F",
    },
)


def obx(**fields: str) -> str:
    """OBX with defaults for the fields a test does not care about."""
    base = {
        1: "1",
        2: "NM",
        3: "718-7^Hemoglobin^LN",
        5: "132",
        6: "g/L",
        7: "115-150",
        8: "N",
        11: "F",
        14: "20260518090000",
    }
    names = {
        "type": 2,
        "code": 3,
        "sub_id": 4,
        "value": 5,
        "unit": 6,
        "range": 7,
        "flags": 8,
        "status": 11,
        "time": 14,
        "field17": 17,
    }
    for key, value in fields.items():
        base[names[key]] = value
    return seg("OBX", base)


def message(*segments: str, msh: str = MSH, sep: str = "\r") -> bytes:
    return (sep.join((msh, *segments)) + sep).encode()


def mapped(raw: bytes, config: InterfaceConfig | None = None) -> MappedMessage:
    return map_message(raw, hospital="H001", config=config)


def refused(raw: bytes, config: InterfaceConfig | None = None) -> Hl7MappingError:
    with pytest.raises(Hl7MappingError) as info:
        mapped(raw, config)
    return info.value


def resources(message_: MappedMessage, rtype: str, report: int = 0) -> list[Json]:
    bundle = message_.reports[report].bundle
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def only_observation(raw: bytes, config: InterfaceConfig | None = None) -> Json:
    (obs,) = resources(mapped(raw, config), "Observation")
    return obs


def broker_result(raw: bytes, config: InterfaceConfig | None = None) -> ExtractedResult:
    (report,) = mapped(raw, config).reports
    (result,) = parse_message(report.value, hospital="H001", zone=SHANGHAI).results
    return result


class TestDecoding:
    def test_cr_crlf_lf_and_a_bom_give_the_same_bundle(self) -> None:
        segments = (PID, OBR, obx())
        cr = mapped(message(*segments)).reports[0].value
        assert mapped(message(*segments, sep="\r\n")).reports[0].value == cr
        assert mapped(message(*segments, sep="\n")).reports[0].value == cr
        assert mapped(b"\xef\xbb\xbf" + message(*segments, sep="\n")).reports[0].value == cr

    def test_gbk_without_msh18_is_read_through_the_configured_fallback(self) -> None:
        pid = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "张^三丰"})
        value = obx(type="ST", code="BXB^白细胞形态^L", value="未见异常", unit="", range="")
        raw = "\r".join((MSH, pid, OBR, value)).encode("gbk")
        assert refused(raw).code is Hl7ErrorCode.ENCODING  # default fallback is UTF-8
        message_ = mapped(raw, InterfaceConfig(fallback_encoding="gbk"))
        (patient,) = resources(message_, "Patient")
        assert patient["name"] == [{"family": "张", "given": ["三丰"]}]
        (obs,) = resources(message_, "Observation")
        assert obs["valueString"] == "未见异常"
        assert obs["code"]["coding"][0]["display"] == "白细胞形态"
        assert message_.encoding == "gb18030"

    def test_msh18_unicode_utf8_wins_over_the_fallback(self) -> None:
        msh = MSH + "||||||UNICODE UTF-8"
        pid = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "李^四"})
        raw = message(pid, OBR, obx(), msh=msh)
        message_ = mapped(raw, InterfaceConfig(fallback_encoding="gbk"))
        assert resources(message_, "Patient")[0]["name"][0]["family"] == "李"
        assert message_.encoding == "utf-8"

    def test_msh18_gb18030_and_latin1(self) -> None:
        pid = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "王^五"})
        raw = "\r".join((MSH + "||||||GB 18030-2000", pid, OBR, obx())).encode("gb18030")
        assert resources(mapped(raw), "Patient")[0]["name"][0]["family"] == "王"
        pid = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "Müller^Jürgen"})
        raw = "\r".join((MSH + "||||||8859/1", pid, OBR, obx())).encode("latin-1")
        assert resources(mapped(raw), "Patient")[0]["name"][0]["family"] == "Müller"

    def test_an_unknown_charset_is_refused(self) -> None:
        err = refused(message(PID, OBR, obx(), msh=MSH + "||||||EBCDIC-KLINGON"))
        assert err.code is Hl7ErrorCode.UNSUPPORTED_CHARSET
        assert err.reject and err.location == ErrorLocation("MSH", 1, 18)

    def test_a_misconfigured_fallback_fails_at_start_up(self) -> None:
        with pytest.raises(Hl7MappingError):
            InterfaceConfig(fallback_encoding="no-such-codec")
        with pytest.raises(ValueError, match="field path"):
            InterfaceConfig(recognition_mark_field="PID-3")

    def test_a_raw_line_break_inside_report_text_stays_in_the_value(self) -> None:
        text_obx = seg("OBX", {1: "1", 2: "TX", 3: "IMP^Impression^L", 5: "line one"})
        raw = message(PID, OBR, text_obx + "\nline two", "NTE|1||note")
        obs = only_observation(raw)
        assert obs["valueString"] == "line one\nline two"
        assert obs["note"] == [{"text": "note"}]


class TestRefusals:
    @pytest.mark.parametrize(
        "raw",
        [b"", b"\x00\xff\xfe garbage", b"PID|1||123", b"MSH", b'{"resourceType": "Bundle"}'],
    )
    def test_garbage_is_a_parse_error(self, raw: bytes) -> None:
        err = refused(raw)
        assert err.code is Hl7ErrorCode.PARSE and err.reject and err.hl7_error == 100

    def test_adt_is_an_unsupported_message(self) -> None:
        adt = MSH.replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01")
        err = refused(message(PID, seg("PV1", {1: "1", 2: "I"}), msh=adt))
        assert err.code is Hl7ErrorCode.UNSUPPORTED_MESSAGE
        assert (err.hl7_error, err.reject) == (200, True)

    def test_another_oru_event_is_an_unsupported_event(self) -> None:
        err = refused(message(PID, OBR, obx(), msh=MSH.replace("ORU^R01^ORU_R01", "ORU^R30")))
        assert (err.code, err.hl7_error) == (Hl7ErrorCode.UNSUPPORTED_MESSAGE, 201)

    def test_a_version_before_2_2_is_refused(self) -> None:
        err = refused(message(PID, OBR, obx(), msh=MSH.replace("|2.5.1", "|2.1")))
        assert (err.code, err.hl7_error) == (Hl7ErrorCode.UNSUPPORTED_VERSION, 203)

    def test_no_pid_or_an_empty_pid3_means_no_patient(self) -> None:
        assert refused(message(OBR, obx())).code is Hl7ErrorCode.NO_PATIENT
        err = refused(message(seg("PID", {1: "1", 5: "Zhang^San"}), OBR, obx()))
        assert err.code is Hl7ErrorCode.NO_PATIENT
        assert (err.location, err.hl7_error, err.reject) == (ErrorLocation("PID", 1, 3), 101, False)

    def test_no_obr_means_no_results(self) -> None:
        assert refused(message(PID)).code is Hl7ErrorCode.NO_RESULTS

    def test_required_codes_missing(self) -> None:
        no_service = OBR.replace("CBC^Blood count^L", "")
        err = refused(message(PID, no_service, obx()))
        assert (err.code, err.location) == (Hl7ErrorCode.MISSING_FIELD, ErrorLocation("OBR", 1, 4))
        err = refused(message(PID, OBR, obx(code="")))
        assert (err.code, err.location) == (Hl7ErrorCode.MISSING_FIELD, ErrorLocation("OBX", 1, 3))

    def test_bad_values_name_their_field(self) -> None:
        err = refused(message(PID, OBR, obx(), obx(time="2026-13-45")))
        assert (err.code, err.location) == (Hl7ErrorCode.INVALID_VALUE, ErrorLocation("OBX", 2, 14))
        err = refused(message(PID, OBR, obx(value="positive")))
        assert err.location == ErrorLocation("OBX", 1, 5)
        assert "positive" not in err.detail  # values are never echoed (PHI)
        err = refused(message(PID, OBR, obx(value="a\\.skx\\b", type="ST")))
        assert err.code is Hl7ErrorCode.INVALID_VALUE  # malformed escape sequence

    def test_unknown_status_codes_are_table_errors(self) -> None:
        err = refused(message(PID, OBR.replace("|F", "|Z"), obx()))
        assert (err.location, err.hl7_error) == (ErrorLocation("OBR", 1, 25), 103)
        err = refused(message(PID, OBR, obx(status="Q")))
        assert (err.location, err.hl7_error) == (ErrorLocation("OBX", 1, 11), 103)

    @settings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
        inserts=st.lists(
            st.sampled_from(["|", "^", "~", "&", "\\", "\\X4\\", "\r", "\n", '""', "\xff", "张"]),
            max_size=6,
        ),
    )
    def test_damaged_messages_raise_only_mapping_errors(
        self, cuts: list[int], inserts: list[str]
    ) -> None:
        text = "\r".join((MSH, PID, OBR, obx(), obx(type="SN", value="<^5"), "NTE|1||x"))
        for cut, insert in zip(cuts, inserts, strict=False):
            text = text[:cut] + insert + text[cut + 1 :]
        logging.disable(logging.WARNING)  # python-hl7 warns on broken escapes
        try:
            mapped(text.encode("utf-8"))
        except Hl7MappingError:
            pass
        finally:
            logging.disable(logging.NOTSET)


class TestEscapesAndRepetitions:
    def test_escape_sequences_are_decoded(self) -> None:
        value = "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41\\"
        raw = message(PID, OBR, obx(type="TX", value=value, unit="", range=""))
        assert only_observation(raw)["valueString"] == "a|b^c&d~e\\f\rgA"

    def test_pid3_repetitions_give_every_identifier(self) -> None:
        pid = seg("PID", {1: "1", 3: f"MRN123^^^HIS^MR~{RESIDENT_ID.lower()}^^^^NNCHN", 5: "A^B"})
        result = broker_result(message(pid, OBR, obx()))
        mrn, national = result.patient.identifiers
        assert (mrn.system, mrn.value) == ("urn:mrb:hospital:H001:pid:HIS", "MRN123")
        assert (national.system, national.value) == (NATIONAL, RESIDENT_ID)
        assert national.scope is IdentifierScope.NATIONAL

    def test_resident_id_by_authority_oid_or_ssn_field(self) -> None:
        pid = seg("PID", {1: "1", 3: f"{RESIDENT_ID}^^^&2.16.156.10011.1.3&ISO", 5: "A^B"})
        (ident,) = resources(mapped(message(pid, OBR, obx())), "Patient")[0]["identifier"]
        assert ident["system"] == NATIONAL
        pid = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "A^B", 19: RESIDENT_ID})
        idents = resources(mapped(message(pid, OBR, obx())), "Patient")[0]["identifier"]
        assert [i["system"] for i in idents] == ["urn:mrb:hospital:H001:pid:HIS", NATIONAL]

    def test_a_resident_id_with_a_bad_check_digit(self) -> None:
        bad = RESIDENT_ID[:-1] + "1"
        alone = seg("PID", {1: "1", 3: f"{bad}^^^^NNCHN"})
        err = refused(message(alone, OBR, obx()))
        assert (err.code, err.location) == (Hl7ErrorCode.INVALID_VALUE, ErrorLocation("PID", 1, 3))
        with_mrn = seg("PID", {1: "1", 3: f"{bad}^^^^NNCHN~MRN123^^^HIS^MR"})
        idents = resources(mapped(message(with_mrn, OBR, obx())), "Patient")[0]["identifier"]
        assert [i["value"] for i in idents] == ["MRN123"]  # as the broker would do

    def test_type_ni_is_national_only_when_it_is_a_resident_id(self) -> None:
        pid = seg("PID", {1: "1", 3: f"{RESIDENT_ID}^^^^NI~123456^^^^NI"})
        idents = resources(mapped(message(pid, OBR, obx())), "Patient")[0]["identifier"]
        assert [i["system"] for i in idents] == [NATIONAL, "urn:mrb:hospital:H001:pid:NI"]

    def test_value_repetitions_are_kept(self) -> None:
        raw = message(PID, OBR, obx(type="FT", value="first~second", unit="", range=""))
        assert only_observation(raw)["valueString"] == "first\nsecond"
        assert only_observation(message(PID, OBR, obx(value="27~25")))["valueString"] == "27; 25"


class TestStatuses:
    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("D", "entered-in-error"),
            ("W", "entered-in-error"),
            ("X", "cancelled"),
            ("C", "corrected"),
            ("A", "amended"),
            ("F", "final"),
            ("P", "preliminary"),
            ("R", "preliminary"),
            ("I", "registered"),
            ("U", "final"),
        ],
    )
    def test_obx11_maps_through_table_0085(self, code: str, status: str) -> None:
        assert only_observation(message(PID, OBR, obx(status=code)))["status"] == status

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("F", "final"),
            ("C", "corrected"),
            ("X", "cancelled"),
            ("P", "preliminary"),
            ("R", "partial"),
            ("A", "partial"),
            ("I", "registered"),
            ("O", "registered"),
        ],
    )
    def test_obr25_maps_through_table_0123(self, code: str, status: str) -> None:
        result = broker_result(message(PID, OBR.replace("|F", f"|{code}"), obx()))
        assert result.status == status
        assert result.withdrawn is (status == "cancelled")

    def test_deleted_observations_withdraw_the_report_when_obr25_is_empty(self) -> None:
        raw = message(PID, OBR.replace("|F", "|"), obx(status="D"), obx(status="W"))
        assert broker_result(raw).status == "entered-in-error"
        assert broker_result(raw).withdrawn

    def test_an_empty_obx11_takes_the_report_status(self) -> None:
        raw = message(PID, OBR.replace("|F", "|C"), obx(status=""))
        assert only_observation(raw)["status"] == "corrected"


class TestValues:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (
                "^182",
                {"valueQuantity": {"value": 182, "unit": "g/L", "system": UCUM, "code": "g/L"}},
            ),
            (
                "<^5",
                {
                    "valueQuantity": {
                        "value": 5,
                        "unit": "g/L",
                        "system": UCUM,
                        "code": "g/L",
                        "comparator": "<",
                    }
                },
            ),
            ("^10^-^20", {"valueRange": {"low": {"value": 10}, "high": {"value": 20}}}),
            (
                "^1^:^128",
                {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}},
            ),
            ("^2^+", {"valueString": "2+"}),
        ],
    )
    def test_structured_numeric(self, value: str, expected: Json) -> None:
        obs = only_observation(message(PID, OBR, obx(type="SN", value=value)))
        got = {k: v for k, v in obs.items() if k.startswith("value")}
        if "valueRange" in expected:  # bounds carry the unit too
            got = {"valueRange": {k: {"value": q["value"]} for k, q in got["valueRange"].items()}}
        assert got == expected

    def test_decimals_keep_the_digits_sent(self) -> None:
        (report,) = mapped(message(PID, OBR, obx(value="+007.50"))).reports
        assert b'"valueQuantity":{"value":7.50,' in report.value

    def test_a_comparator_inside_nm_is_tolerated(self) -> None:
        obs = only_observation(message(PID, OBR, obx(value="<0.5", unit="mmol/L")))
        assert obs["valueQuantity"]["comparator"] == "<"
        assert obs["valueQuantity"]["code"] == "mmol/L"

    def test_ucum_only_for_ucum_codes(self) -> None:
        escaped = only_observation(message(PID, OBR, obx(unit="10\\S\\9/L")))
        assert escaped["valueQuantity"]["code"] == "10*9/L"  # 10^9/L, escaped ^
        assert escaped["valueQuantity"]["unit"] == "10^9/L"
        declared = only_observation(message(PID, OBR, obx(unit="mg/dL^milligram per dL^UCUM")))
        assert declared["valueQuantity"]["code"] == "mg/dL"
        plain = only_observation(message(PID, OBR, obx(unit="cells/HPF")))
        assert plain["valueQuantity"] == {"value": 132, "unit": "cells/HPF"}

    @pytest.mark.parametrize(
        ("text", "low", "high"),
        [("3.5-5.0", 3.5, 5.0), ("4.3 to 6.2", 4.3, 6.2), ("<5", None, 5), (">1", 1, None)],
    )
    def test_reference_ranges(self, text: str, low: float | None, high: float | None) -> None:
        (rng,) = only_observation(message(PID, OBR, obx(range=text)))["referenceRange"]
        assert rng["text"] == text
        assert rng.get("low", {}).get("value") == low
        assert rng.get("high", {}).get("value") == high

    def test_a_textual_range_stays_text(self) -> None:
        obs = only_observation(message(PID, OBR, obx(range="阴性")))
        assert obs["referenceRange"] == [{"text": "阴性"}]

    def test_interpretation_flags_including_arrows(self) -> None:
        obs = only_observation(message(PID, OBR, obx(flags="H~↑~XYZ")))
        assert obs["interpretation"] == [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "H",
                        "display": "High",
                    }
                ]
            },
            {"text": "XYZ"},
        ]

    def test_flags_the_ig_leaves_unmapped_stay_text(self) -> None:
        obs = only_observation(message(PID, OBR, obx(flags="AC~HM~OBX~QCF~TOX~LU")))
        assert obs["interpretation"][:5] == [
            {"text": code} for code in ("AC", "HM", "OBX", "QCF", "TOX")
        ]
        assert obs["interpretation"][5]["coding"][0]["code"] == "LU"

    def test_coded_dates_and_documents(self) -> None:
        coded = only_observation(message(PID, OBR, obx(type="CWE", value="POS^阳性^99LIS")))
        assert coded["valueCodeableConcept"]["coding"] == [
            {"system": "urn:mrb:hospital:H001:code:99LIS", "code": "POS", "display": "阳性"}
        ]
        text_only = only_observation(message(PID, OBR, obx(type="CE", value="^阴性")))
        assert text_only["valueCodeableConcept"] == {"text": "阴性"}
        dated = only_observation(message(PID, OBR, obx(type="DT", value="20260501")))
        assert dated["valueDateTime"] == "2026-05-01"
        document = only_observation(message(PID, OBR, obx(type="ED", value="^AP^PDF^Base64^JVBE")))
        assert not any(k.startswith("value") for k in document)


class TestStructure:
    def test_minimal_message_without_optional_fields_is_a_valid_result(self) -> None:
        msh = "MSH|^~\\&|LIS||||||ORU^R01|1|P|2.3"
        raw = message(
            seg("PID", {3: "42"}),
            seg("OBR", {3: "F42", 4: "GLU"}),
            seg("OBX", {2: "NM", 3: "GLU", 5: "5.6", 11: "F"}),
            msh=msh,
        )
        result = broker_result(raw)
        assert result.business_id == "DiagnosticReport|urn:mrb:hospital:H001:filler-order|F42"
        assert result.status == "final" and result.effective is None
        assert result.version.source_time is None
        assert result.items[1].codings[0].system == "urn:mrb:hospital:H001:lab-code"

    def test_each_obr_group_is_one_bundle_with_its_own_patient(self) -> None:
        second_pid = seg("PID", {1: "2", 3: "MRN999^^^HIS^MR"})
        second_obr = OBR.replace("FL1^LIS", "FL2^LIS")
        message_ = mapped(message(PID, OBR, obx(), second_pid, second_obr, obx(), obx()))
        assert [r.business_id[1] for r in message_.reports] == ["FL1", "FL2"]
        assert [len(resources(message_, "Observation", i)) for i in (0, 1)] == [1, 2]
        patients = [resources(message_, "Patient", i)[0]["identifier"][0]["value"] for i in (0, 1)]
        assert patients == ["MRN123", "MRN999"]

    def test_identity_falls_back_from_filler_to_placer_to_control_id(self) -> None:
        orc = seg("ORC", {1: "RE", 3: "ORCFILL^LIS"})
        no_filler = OBR.replace("FL1^LIS", "")
        assert mapped(message(PID, orc, no_filler, obx())).reports[0].business_id == (
            "urn:mrb:hospital:H001:filler-order:LIS",
            "ORCFILL",
        )
        assert mapped(message(PID, no_filler, obx())).reports[0].business_id == (
            "urn:mrb:hospital:H001:placer-order:HIS",
            "PL1",
        )
        bare = no_filler.replace("PL1^HIS", "")
        assert mapped(message(PID, bare, obx(), bare, obx())).reports[1].business_id == (
            "urn:mrb:hospital:H001:hl7-control-id",
            "MSG0001/2",
        )

    def test_mapping_is_deterministic(self) -> None:
        raw = message(PID, OBR, obx(), obx(code="789-8^RBC^LN", value="4.5", unit="10*12/L"))
        assert mapped(raw).reports[0].value == mapped(raw).reports[0].value

    def test_recognition_mark_from_the_configured_obr_field(self) -> None:
        obr = seg(
            "OBR",
            {1: "1", 3: "FL1^LIS", 4: "CBC^Blood count^L", 20: "川HR", 25: "F"},
        )
        raw = message(PID, obr, obx())
        config = InterfaceConfig(recognition_mark_field="OBR-20")
        result = broker_result(raw, config)
        assert [i.recognition_mark for i in result.items] == ["川HR", "川HR"]
        assert all(i.recognition_mark is None for i in broker_result(raw).items)

    def test_recognition_mark_per_observation(self) -> None:
        raw = message(PID, OBR, obx(field17="泸州HR"), obx(code="789-8^RBC^LN"))
        result = broker_result(raw, InterfaceConfig(recognition_mark_field="OBX-17"))
        assert [i.recognition_mark for i in result.items] == [None, "泸州HR", None]

    def test_times_follow_the_interface_zone_and_tolerate_iso_text(self) -> None:
        raw = message(PID, OBR, obx(time="2026-05-18 09:00:00"))
        utc = InterfaceConfig(zone=ZoneInfo("UTC"))
        assert only_observation(raw, utc)["effectiveDateTime"] == "2026-05-18T09:00:00+00:00"
        assert only_observation(raw)["effectiveDateTime"] == "2026-05-18T09:00:00+08:00"
