"""SPM -> Specimen and results without a value: what lets the broker refuse a result
measured on an unusable specimen, or one the lab could not produce."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.oru import MappedMessage, map_message
from broker.ingest.parse import parse_message
from tests.unit.test_hl7v2_mapping import obx, seg

Json = dict[str, Any]
SHANGHAI = ZoneInfo("Asia/Shanghai")
REJECT_URL = "urn:mrb:fhir:extension:specimen-reject-reason"
V2_0490 = "http://terminology.hl7.org/CodeSystem/v2-0490"
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

MSH = (
    "MSH|^~\\&|LIS|检验科|MRB|H001|20260518103000+0800||ORU^R01^ORU_R01|MSG0002|P|2.5.1"
    "|||||CHN|UNICODE UTF-8"
)
PID = seg("PID", {1: "1", 3: "MRN123^^^HIS^MR", 5: "张^三", 7: "19800101", 8: "F"})
ORC = seg("ORC", {1: "RE", 2: "PL1^HIS", 3: "FL1^LIS"})
OBR = seg(
    "OBR",
    {1: "1", 2: "PL1^HIS", 3: "FL1^LIS", 4: "CBC^血常规^L", 22: "20260518100000", 25: "F"},
)
GLUCOSE = obx(code="2345-7^Glucose^LN", value="5.6", unit="mmol/L", range="3.9-6.1")


def spm(**fields: str) -> str:
    """SPM with a barcode (placer) and LIS accession (filler), whole blood, collected and
    received times; fields a test names replace these."""
    base = {
        1: "1",
        2: "BC2026051800012&HIS^LAB778899&LIS",
        4: "BLD^Whole blood^HL70487",
        17: "20260518083000",
        18: "20260518084500",
    }
    names = {"id": 2, "type": 4, "note": 14, "collected": 17, "received": 18}
    names |= {"available": 20, "reject": 21, "condition": 24}
    for key, value in fields.items():
        base[names[key]] = value
    return seg("SPM", base)


def mapped(*segments: str) -> MappedMessage:
    raw = ("\r".join((MSH, *segments)) + "\r").encode()
    return map_message(raw, hospital="H001")


def resources(message: MappedMessage, rtype: str, report: int = 0) -> list[Json]:
    bundle = message.reports[report].bundle
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def only(message: MappedMessage, rtype: str) -> Json:
    (res,) = resources(message, rtype)
    return res


def valid(message: MappedMessage) -> None:
    """Every Bundle is valid R4 (fhir.resources' R4B models) and indexed by the broker."""
    for report in message.reports:
        get_fhir_model_class("Bundle").model_validate_json(report.value)
        for entry in report.bundle["entry"]:
            res = entry["resource"]
            get_fhir_model_class(res["resourceType"]).model_validate(res)
            assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
        (result,) = parse_message(report.value, hospital="H001", zone=SHANGHAI).results
        assert result.business_id == f"DiagnosticReport|{'|'.join(report.business_id)}"


def no_value(observation: Json) -> bool:
    return not any(key.startswith("value") for key in observation)


class TestSpecimen:
    def test_a_described_specimen_is_mapped_and_referenced(self) -> None:
        message = mapped(PID, ORC, OBR, obx(), GLUCOSE, spm(available="Y", note="空腹~晨起"))
        valid(message)
        specimen = only(message, "Specimen")
        url = f"urn:uuid:{specimen['id']}"
        assert only(message, "DiagnosticReport")["specimen"] == [{"reference": url}]
        assert [o["specimen"] for o in resources(message, "Observation")] == [
            {"reference": url},
            {"reference": url},
        ]
        patient = message.reports[0].bundle["entry"][0]["fullUrl"]
        assert specimen["subject"] == {"reference": patient}
        assert specimen["identifier"] == [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PGN"}
                    ]
                },
                "system": "urn:mrb:hospital:H001:placer-specimen:HIS",
                "value": "BC2026051800012",
            },
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FGN"}
                    ]
                },
                "system": "urn:mrb:hospital:H001:filler-specimen:LIS",
                "value": "LAB778899",
            },
        ]
        assert specimen["type"] == {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0487",
                    "code": "BLD",
                    "display": "Whole blood",
                }
            ]
        }
        assert specimen["status"] == "available"  # SPM-20 Y (table 0136)
        assert specimen["collection"] == {"collectedDateTime": "2026-05-18T08:30:00+08:00"}
        assert specimen["receivedTime"] == "2026-05-18T08:45:00+08:00"
        assert specimen["meta"] == {"lastUpdated": "2026-05-18T10:30:00+08:00"}
        assert specimen["note"] == [{"text": "空腹"}, {"text": "晨起"}]
        assert "extension" not in specimen and "condition" not in specimen

    def test_a_rejected_specimen_is_unsatisfactory_and_says_why(self) -> None:
        reject = "RH^Hemolysis^HL70490^^^^^^标本溶血~QS"
        message = mapped(PID, OBR, obx(), spm(available="Y", reject=reject))
        valid(message)
        specimen = only(message, "Specimen")
        assert specimen["status"] == "unsatisfactory"  # outranks SPM-20 Y
        assert specimen["extension"] == [
            {
                "url": REJECT_URL,
                "valueCodeableConcept": {
                    "coding": [{"system": V2_0490, "code": "RH", "display": "Hemolysis"}],
                    "text": "标本溶血",
                },
            },
            {
                "url": REJECT_URL,
                "valueCodeableConcept": {
                    "coding": [
                        {"system": V2_0490, "code": "QS", "display": "Quantity not sufficient"}
                    ]
                },
            },
        ]
        assert b'"url":"urn:mrb:fhir:extension:specimen-reject-reason"' in message.reports[0].value

    def test_a_local_reject_code_is_not_claimed_for_table_0490(self) -> None:
        specimen = only(mapped(PID, OBR, obx(), spm(reject="ZX^标本量不足^99LIS")), "Specimen")
        assert specimen["status"] == "unsatisfactory"
        (ext,) = specimen["extension"]
        assert ext["valueCodeableConcept"] == {
            "coding": [
                {
                    "system": "urn:mrb:hospital:H001:code:99LIS",
                    "code": "ZX",
                    "display": "标本量不足",
                }
            ]
        }

    def test_condition_codes_from_table_0493_keep_the_senders_words(self) -> None:
        condition = "HEM^溶血~clot~LIP^脂血^99LIS~^冷藏运输"
        message = mapped(PID, OBR, obx(), spm(condition=condition))
        valid(message)
        specimen = only(message, "Specimen")
        assert specimen["condition"] == [
            {"coding": [{"system": V2_0493, "code": "HEM", "display": "溶血"}]},
            {"coding": [{"system": V2_0493, "code": "CLOT", "display": "Clotted"}]},
            {
                "coding": [
                    {"system": "urn:mrb:hospital:H001:code:99LIS", "code": "LIP", "display": "脂血"}
                ]
            },
            {"text": "冷藏运输"},
        ]
        assert "status" not in specimen  # no SPM-20, no SPM-21: nothing says either way
        assert "extension" not in specimen

    def test_sent_under_hl70493_with_its_own_text(self) -> None:
        specimen = only(
            mapped(PID, OBR, obx(), spm(condition="HEM^Hemolyzed^HL70493^^^^^^轻度溶血")),
            "Specimen",
        )
        assert specimen["condition"] == [
            {
                "coding": [{"system": V2_0493, "code": "HEM", "display": "Hemolyzed"}],
                "text": "轻度溶血",
            }
        ]

    def test_several_specimens_the_report_names_all_observations_none(self) -> None:
        serum = spm(id="BC01&HIS", type="SER^Serum^HL70487", available="N")
        plasma = seg("SPM", {1: "2", 2: "BC02&HIS", 4: "PLAS^Plasma^HL70487", 24: "HEM"})
        message = mapped(PID, OBR, obx(), GLUCOSE, serum, plasma)
        valid(message)
        first, second = resources(message, "Specimen")
        assert [s["identifier"][0]["value"] for s in (first, second)] == ["BC01", "BC02"]
        assert first["status"] == "unavailable"  # SPM-20 N
        assert second["condition"][0]["coding"][0]["code"] == "HEM"
        assert first["id"] != second["id"]
        assert only(message, "DiagnosticReport")["specimen"] == [
            {"reference": f"urn:uuid:{first['id']}"},
            {"reference": f"urn:uuid:{second['id']}"},
        ]
        # which tube an OBX was measured on is unknown: a reader takes the report's list
        assert all("specimen" not in o for o in resources(message, "Observation"))

    def test_specimen_ids_follow_spm2_across_versions(self) -> None:
        a, b = spm(id="BC01&HIS"), seg("SPM", {1: "2", 2: "BC02&HIS", 4: "SER"})
        ids = [s["id"] for s in resources(mapped(PID, OBR, obx(), a, b), "Specimen")]
        swapped = [s["id"] for s in resources(mapped(PID, OBR, obx(), b, a), "Specimen")]
        assert swapped == ids[::-1]
        twins = resources(mapped(PID, OBR, obx(), a, a), "Specimen")
        assert len({s["id"] for s in twins}) == 2  # repeated SPM-2: still two resources

    def test_each_report_gets_its_own_specimens(self) -> None:
        second_obr = OBR.replace("FL1^LIS", "FL2^LIS").replace("CBC^血常规^L", "GLU^血糖^L")
        message = mapped(PID, OBR, obx(), spm(reject="RC"), second_obr, GLUCOSE)
        valid(message)
        assert len(resources(message, "Specimen", 0)) == 1
        assert resources(message, "Specimen", 1) == []
        (glucose,) = resources(message, "Observation", 1)
        assert "specimen" not in glucose

    def test_no_spm_means_no_specimen_and_no_references(self) -> None:
        message = mapped(PID, OBR, obx(), GLUCOSE)
        valid(message)
        assert resources(message, "Specimen") == []
        assert "specimen" not in only(message, "DiagnosticReport")
        assert all("specimen" not in o for o in resources(message, "Observation"))

    def test_a_collection_period_and_the_reports_collection_time(self) -> None:
        message = mapped(PID, OBR, obx(), spm(collected="202605180800^202605180830"))
        specimen = only(message, "Specimen")
        assert specimen["collection"] == {
            "collectedPeriod": {
                "start": "2026-05-18T08:00:00+08:00",
                "end": "2026-05-18T08:30:00+08:00",
            }
        }
        # OBR-7 is empty: the report's time is the collection start (SPM-17.1)
        assert only(message, "DiagnosticReport")["effectiveDateTime"] == (
            "2026-05-18T08:00:00+08:00"
        )

    @pytest.mark.parametrize(
        ("fields", "where"),
        [
            ({"received": "2026-13-45"}, ErrorLocation("SPM", 1, 18)),
            ({"collected": "20260518^someday"}, ErrorLocation("SPM", 1, 17, 2)),
        ],
    )
    def test_a_bad_specimen_time_names_its_field(
        self, fields: dict[str, str], where: ErrorLocation
    ) -> None:
        with pytest.raises(Hl7MappingError) as info:
            mapped(PID, OBR, obx(), spm(**fields))
        assert (info.value.code, info.value.location) == (Hl7ErrorCode.INVALID_VALUE, where)


class TestNoValue:
    @pytest.mark.parametrize("value_type", ["NM", "ST", "TX", "CWE", "SN", "RP", ""])
    @pytest.mark.parametrize("value", ["", '""', "   "])
    def test_an_empty_obx5_gives_no_value(self, value_type: str, value: str) -> None:
        message = mapped(PID, OBR, obx(type=value_type, value=value))
        valid(message)
        observation = only(message, "Observation")
        assert no_value(observation)
        assert "dataAbsentReason" not in observation  # OBX-11 F: nothing says why
        assert observation["status"] == "final"

    def test_a_reference_pointer_without_its_pointer_gives_no_value(self) -> None:
        observation = only(mapped(PID, OBR, obx(type="RP", value="^image^PICT")), "Observation")
        assert no_value(observation)

    def test_x_results_cannot_be_obtained(self) -> None:
        message = mapped(PID, OBR, obx(status="X", value="", flags=""), spm(reject="RH"))
        valid(message)
        observation = only(message, "Observation")
        assert observation["status"] == "cancelled"
        assert observation["_status"] == {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/alternate-codes",
                    "valueCodeableConcept": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v2-0085", "code": "X"}
                        ]
                    },
                }
            ]
        }
        assert observation["dataAbsentReason"] == {
            "coding": [{"system": ABSENT, "code": "not-performed", "display": "Not Performed"}]
        }
        assert no_value(observation)

    def test_x_with_an_explanation_in_obx5_keeps_it_as_the_reason_text(self) -> None:
        observation = only(
            mapped(PID, OBR, obx(type="ST", status="X", value="标本溶血，请重新采样")),
            "Observation",
        )
        assert no_value(observation)  # obs-6: a reason and a value never both
        assert observation["dataAbsentReason"]["text"] == "标本溶血，请重新采样"
        assert observation["dataAbsentReason"]["coding"][0]["code"] == "not-performed"

    def test_x_explanation_is_not_read_as_the_declared_type(self) -> None:
        observation = only(
            mapped(PID, OBR, obx(type="NM", status="X", value="溶血")), "Observation"
        )
        assert no_value(observation)
        assert observation["dataAbsentReason"]["text"] == "溶血"

    def test_n_not_asked(self) -> None:
        observation = only(mapped(PID, OBR, obx(status="N", value="")), "Observation")
        assert observation["status"] == "cancelled"
        assert observation["dataAbsentReason"]["coding"] == [
            {"system": ABSENT, "code": "not-asked", "display": "Not Asked"}
        ]
        assert "_status" not in observation

    def test_d_deletes_and_keeps_its_value(self) -> None:
        observation = only(mapped(PID, OBR, obx(status="D")), "Observation")
        assert observation["status"] == "entered-in-error"
        assert observation["valueQuantity"]["value"] == 132
        assert "dataAbsentReason" not in observation
