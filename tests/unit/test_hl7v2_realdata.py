"""Every real HL7 v2 sample goes through the adapter and the broker's own parser.

The samples (shared/realdata/hl7v2, see SOURCES.md) cover v2.2 to v2.5.1, CR/CRLF/LF
separators and UTF-8 BOMs. Where Microsoft's FHIR-Converter converted the same message
(fhir/converter-output), identifiers, codes and values are compared with its output.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.oru import MappedMessage, map_message
from broker.domain.results import ExtractedResult
from broker.ingest.parse import parse_message

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
HL7 = REALDATA / "hl7v2"
EXPECTED = REALDATA / "fhir" / "converter-output"
SHANGHAI = ZoneInfo("Asia/Shanghai")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LAB_CODE = "urn:mrb:hospital:H001:lab-code"

pytestmark = pytest.mark.skipif(not HL7.is_dir(), reason=f"real-data corpus not at {REALDATA}")

Json = dict[str, Any]


def sample(name: str) -> bytes:
    return (HL7 / name).read_bytes()


def mapped(name: str, config: InterfaceConfig | None = None) -> MappedMessage:
    return map_message(sample(name), hospital="H001", config=config)


def results(message: MappedMessage) -> list[ExtractedResult]:
    """Each Bundle through the broker's parser: one result per Bundle."""
    out = []
    for report in message.reports:
        parsed = parse_message(report.value, hospital="H001", zone=SHANGHAI)
        (result,) = parsed.results
        out.append(result)
    return out


def resources(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def converter(name: str) -> Json:
    doc: Json = json.loads((EXPECTED / name).read_text(encoding="utf-8-sig"))
    return doc


def loinc(obs: Json) -> str:
    return str(next(c["code"] for c in obs["code"]["coding"] if c.get("system") == LOINC))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# Every file: its outcome with the default interface configuration.
OUTCOMES: dict[str, list[tuple[str, str]] | Hl7ErrorCode] = {
    "msfc_LAB-ORU-1.hl7": [
        ("urn:mrb:hospital:H001:filler-order", "82503246"),
        ("urn:mrb:hospital:H001:filler-order", "890775544"),
    ],
    "msfc_LAB-ORU-2.hl7": [
        ("urn:mrb:hospital:H001:filler-order", "890775544"),
        ("urn:mrb:hospital:H001:filler-order", "82503246"),
    ],
    "msfc_LRI_2.0-NG_CBC_Typ_Message.hl7": [
        ("urn:mrb:hospital:H001:filler-order:NIST%20Lab%20Filler", "R-991133")
    ],
    "msfc_ORU-R01-01.hl7": [("urn:oid:2.16.840.1.114222.4.3.3.5.1.2", "986")],
    "msfc_ORU-R01-RMGEAD.hl7": [("urn:mrb:hospital:H001:filler-order:GHH%20LAB", "1045813")],
    "nodehl7_bicp_ORUR01.hl7": Hl7ErrorCode.INVALID_VALUE,
    "nodehl7_birp_ORUR01.hl7": [
        ("urn:mrb:hospital:H001:filler-order:LCS", "20809880170"),
        ("urn:mrb:hospital:H001:filler-order:LCS", "20809880170/997602"),
    ],
    "pythonhl7_sample_hl7_oru.hl7": [("urn:mrb:hospital:H001:filler-order:GHH%20LAB", "1045813")],
}


def test_the_outcome_table_covers_every_sample() -> None:
    assert sorted(p.name for p in HL7.glob("*.hl7")) == sorted(OUTCOMES)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_each_sample_is_indexed_under_its_filler_number_or_refused_precisely(name: str) -> None:
    expected = OUTCOMES[name]
    if isinstance(expected, Hl7ErrorCode):
        with pytest.raises(Hl7MappingError) as info:
            mapped(name)
        assert info.value.code is expected
        return
    message = mapped(name)
    assert [r.business_id for r in message.reports] == expected
    assert [r.business_id for r in results(message)] == [
        f"DiagnosticReport|{system}|{value}" for system, value in expected
    ]


@pytest.mark.parametrize(
    "name", sorted(n for n, outcome in OUTCOMES.items() if not isinstance(outcome, Hl7ErrorCode))
)
def test_every_resource_is_valid_r4_and_specimen_references_resolve(name: str) -> None:
    for report in mapped(name).reports:
        get_fhir_model_class("Bundle").model_validate_json(report.value)
        urls = set()
        for entry in report.bundle["entry"]:
            res = entry["resource"]
            get_fhir_model_class(res["resourceType"]).model_validate(res)
            urls.add(entry["fullUrl"])
        (dr,) = resources(report.bundle, "DiagnosticReport")
        specimens = resources(report.bundle, "Specimen")
        assert [r["reference"] for r in dr.get("specimen", [])] == [
            f"urn:uuid:{s['id']}" for s in specimens
        ]
        for obs in resources(report.bundle, "Observation"):
            if len(specimens) == 1:
                assert obs["specimen"]["reference"] in urls
            else:
                assert "specimen" not in obs


class TestLabOru1And2:
    """The same two orders, preliminary at 06:45 and final at 09:31 (+07:00)."""

    def test_first_message_carries_statuses_per_observation(self) -> None:
        cbc, diff = mapped("msfc_LAB-ORU-1.hl7").reports
        observations = resources(cbc.bundle, "Observation")
        assert [loinc(o) for o in observations] == [
            "11156-7",
            "11273-0",
            "20509-6",
            "20570-8",
            "11125-2",
        ]
        # OBX-11 I, P, I, P, F (table 0085); OBR-25 F makes the report final.
        assert [o["status"] for o in observations] == [
            "registered",
            "preliminary",
            "registered",
            "preliminary",
            "final",
        ]
        (report,) = resources(cbc.bundle, "DiagnosticReport")
        assert report["status"] == "final"
        # OBR-25 empty: all five observations are P, so the report is preliminary.
        (diff_report,) = resources(diff.bundle, "DiagnosticReport")
        assert diff_report["status"] == "preliminary"

    def test_values_units_and_collection_time_match_the_converter(self) -> None:
        cbc = mapped("msfc_LAB-ORU-1.hl7").reports[0].bundle
        ms = converter("LAB-ORU-1-expected.json")
        ms_values = {
            loinc(o): o["valueQuantity"]
            for o in resources(ms, "Observation")
            if "valueQuantity" in o
        }
        ours = {
            loinc(o): o["valueQuantity"]
            for o in resources(cbc, "Observation")
            if "valueQuantity" in o
        }
        assert set(ours) <= set(ms_values)
        for code, quantity in ours.items():
            assert quantity["value"] == ms_values[code]["value"]
            assert quantity["unit"] == ms_values[code]["unit"]
            # "%" is a UCUM code; tera.l-1 and giga.l-1 are not, so they stay unit text.
            assert ("system" in quantity) is (quantity["unit"] == "%")
        (report,) = resources(cbc, "DiagnosticReport")
        assert report["effectiveDateTime"] == "2014-10-06T05:35:00+07:00"  # SPM-17
        assert report["meta"]["lastUpdated"] == "2014-10-06T06:45:00+07:00"  # MSH-7

    def test_patient_identifier_matches_the_converter(self) -> None:
        (patient,) = resources(mapped("msfc_LAB-ORU-1.hl7").reports[0].bundle, "Patient")
        ms_patient = resources(converter("LAB-ORU-1-expected.json"), "Patient")[0]
        ms_mrn = next(i for i in ms_patient["identifier"] if i["type"]["coding"][0]["code"] == "MR")
        (ident,) = patient["identifier"]
        assert ident["value"] == ms_mrn["value"] == "10006579"
        assert ident["system"] == "urn:mrb:hospital:H001:pid:1"  # CX.4 authority "1"
        assert patient["birthDate"] == "1924-10-10" and patient["gender"] == "male"

    def test_the_final_message_is_a_later_version_of_the_same_results(self) -> None:
        first = {r.business_id: r for r in results(mapped("msfc_LAB-ORU-1.hl7"))}
        second = {r.business_id: r for r in results(mapped("msfc_LAB-ORU-2.hl7"))}
        assert set(first) == set(second)
        for business_id, final in second.items():
            assert final.status == "final"
            assert first[business_id].version < final.version
        hgb = next(
            o
            for o in resources(mapped("msfc_LAB-ORU-2.hl7").reports[1].bundle, "Observation")
            if loinc(o) == "20509-6"
        )
        assert hgb["valueQuantity"] == {"value": 13.4, "unit": "g/l-1"}

    def test_resource_ids_stay_the_same_across_versions(self) -> None:
        def ids(name: str) -> set[str]:
            return {
                e["resource"]["id"]
                for r in mapped(name).reports
                for e in r.bundle["entry"]
                if e["resource"]["resourceType"] != "Patient"
            }

        # OBX order changed between the two messages; ids follow OBX-3, not position.
        assert ids("msfc_LAB-ORU-1.hl7") == ids("msfc_LAB-ORU-2.hl7")

    def test_specimen_matches_the_converter(self) -> None:
        cbc = mapped("msfc_LAB-ORU-1.hl7").reports[0].bundle
        (specimen,) = resources(cbc, "Specimen")
        ms = next(
            s
            for s in resources(converter("LAB-ORU-1-expected.json"), "Specimen")
            if "type" in s  # the converter also makes one from OBR; SPM's has the type
        )
        for key in ("collection", "receivedTime", "status"):
            assert specimen[key] == ms[key]
        assert specimen["type"]["coding"][0]["code"] == ms["type"]["coding"][0]["code"] == "BLD"
        assert [i["value"] for i in specimen["identifier"]] == ["SpecimenID"]
        assert specimen["identifier"][0]["type"]["coding"][0]["code"] == "PGN"  # SPM-2.1


class TestNistLriCbc:
    name = "msfc_LRI_2.0-NG_CBC_Typ_Message.hl7"

    def test_every_observation_matches_the_converter(self) -> None:
        (report,) = mapped(self.name).reports
        ours = resources(report.bundle, "Observation")
        theirs = resources(converter("LRI_2.0-NG_CBC_Typ_Message-expected.json"), "Observation")
        assert len(ours) == len(theirs) == 28
        for mine, ms in zip(ours, theirs, strict=True):
            assert loinc(mine) == loinc(ms)
            assert mine["status"] == ms["status"] == "final"
            for key in ("valueQuantity", "valueString"):
                assert mine.get(key) == ms.get(key)
            if "valueCodeableConcept" in ms:
                assert mine["valueCodeableConcept"] == ms["valueCodeableConcept"]
            assert [i["coding"][0]["code"] for i in mine["interpretation"]] == [
                i["coding"][0]["code"] for i in ms["interpretation"]
            ]
            assert instant(mine["effectiveDateTime"]) == instant(ms["effectiveDateTime"])

    def test_ucum_units_and_parsed_reference_ranges(self) -> None:
        (report,) = mapped(self.name).reports
        rbc = resources(report.bundle, "Observation")[0]
        assert rbc["valueQuantity"] == {
            "value": 4.41,
            "unit": "million per microliter",
            "system": UCUM,
            "code": "10*6/uL",
        }
        (rng,) = rbc["referenceRange"]
        assert rng["text"] == "4.3 to 6.2"
        assert (rng["low"]["value"], rng["high"]["value"]) == (4.3, 6.2)

    def test_report_times_and_codes(self) -> None:
        (report,) = mapped(self.name).reports
        (dr,) = resources(report.bundle, "DiagnosticReport")
        (ms,) = resources(converter("LRI_2.0-NG_CBC_Typ_Message-expected.json"), "DiagnosticReport")
        assert instant(dr["issued"]) == instant(ms["issued"])  # OBR-22
        assert instant(dr["effectiveDateTime"]) == instant(ms["effectiveDateTime"])  # OBR-7
        assert dr["code"]["coding"][0] == {
            "system": LOINC,
            "code": "57021-8",
            "display": "CBC W Auto Differential panel in Blood",
        }
        assert dr["code"]["coding"][1]["system"] == LAB_CODE  # 99USI alternate: local
        assert [i["type"]["coding"][0]["code"] for i in dr["identifier"]] == ["FILL", "PLAC"]

    def test_specimen_type_is_snomed_as_sent(self) -> None:
        (report,) = mapped(self.name).reports
        (specimen,) = resources(report.bundle, "Specimen")
        assert specimen["type"] == {
            "coding": [{"system": "http://snomed.info/sct", "code": "119297000", "display": "BLD"}],
            "text": "Blood",
        }
        ms = resources(converter("LRI_2.0-NG_CBC_Typ_Message-expected.json"), "Specimen")[-1]
        assert instant(specimen["collection"]["collectedDateTime"]) == instant(
            ms["collection"]["collectedDateTime"]
        )
        assert "identifier" not in specimen and "status" not in specimen  # SPM-2, SPM-20 empty

    def test_broker_reads_the_panel_with_every_item(self) -> None:
        (result,) = results(mapped(self.name))
        assert result.status == "final"
        assert len(result.items) == 29  # the report and its 28 observations
        assert (
            result.items[2].summary
            == "Hemoglobin [Mass/volume] in Blood: 12.5 grams per milliliter"
        )
        assert [i.value for i in result.patient.identifiers] == ["PATID1234"]


class TestKitchenSinkOru:
    name = "msfc_ORU-R01-01.hl7"

    def test_only_the_order_observation_is_mapped(self) -> None:
        message = mapped(self.name)
        (report,) = message.reports
        (obs,) = resources(report.bundle, "Observation")
        assert obs["status"] == "preliminary"
        assert obs["valueCodeableConcept"]["coding"] == [
            {"system": "http://snomed.info/sct", "code": "27268008", "display": "Salmonella"}
        ]
        assert obs["code"]["coding"][0]["system"] == LAB_CODE  # coding system "XYZ" is local
        assert [n["text"] for n in obs["note"]] == ["Submission of serum", "No Antibodies Detected"]
        assert message.notes == (
            "OBX[1] precedes any OBR: not part of a report",
            "OBX[2] precedes any OBR: not part of a report",
            "OBX[4] describes the specimen (after SPM)",
            "OBX[5] describes the specimen (after SPM)",
        )

    def test_oid_authorities_become_urn_oid_systems(self) -> None:
        (report,) = mapped(self.name).reports
        (patient,) = resources(report.bundle, "Patient")
        assert patient["identifier"][0]["system"] == "urn:oid:2.16.840.1.114222.4.3.3.5.1.2"
        (dr,) = resources(report.bundle, "DiagnosticReport")
        assert dr["meta"]["lastUpdated"] == "2012-03-14T12:59:00-02:15"  # MSH-7 odd offset
        assert dr["status"] == "final"

    def test_the_specimen_condition_reaches_the_bundle(self) -> None:
        (report,) = mapped(self.name).reports
        (specimen,) = resources(report.bundle, "Specimen")
        v2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
        # SPM-24 "AUT^Autolyzed^HL70493^CLOT~HEM": CWE alternate and a bare repetition
        assert specimen["condition"] == [
            {
                "coding": [
                    {"system": v2_0493, "code": "AUT", "display": "Autolyzed"},
                    {"system": v2_0493, "code": "CLOT", "display": "Clotted"},
                ]
            },
            {"coding": [{"system": v2_0493, "code": "HEM", "display": "Hemolyzed"}]},
        ]
        assert specimen["status"] == "available"  # SPM-20 Y, no SPM-21
        assert "extension" not in specimen
        assert specimen["collection"] == {  # SPM-17 with an end: a period
            "collectedPeriod": {
                "start": "2011-01-03T14:34:28-08:00",
                "end": "2011-11-03T14:34:28-08:00",
            }
        }
        placer, filler = specimen["identifier"]
        assert (placer["system"], placer["value"]) == (
            "urn:mrb:hospital:H001:placer-specimen",
            "2012545",
        )
        assert (filler["system"], filler["value"]) == (
            "urn:oid:2.16.840.1.114222.4.3.3.5.1.2",
            "2012999999",
        )
        assert specimen["note"] == [{"text": "This is a specimen resource"}]


class TestGlucoseSamples:
    def test_structured_numeric_value_matches_the_converter(self) -> None:
        (report,) = mapped("msfc_ORU-R01-RMGEAD.hl7").reports
        (obs,) = resources(report.bundle, "Observation")
        (ms,) = resources(converter("ORU-R01-RMGEAD-expected.json"), "Observation")
        assert obs["valueQuantity"] == ms["valueQuantity"] == {"value": 182, "unit": "mg/dl"}
        assert obs["referenceRange"] == ms["referenceRange"] == [{"text": "70_105"}]
        assert obs["interpretation"][0]["coding"][0]["code"] == "H"
        # OBX-3.3 holds a LOINC long name, not "LN": the code stays local (catalog-mapped).
        assert obs["code"]["coding"][0] == {
            "system": LAB_CODE,
            "code": "1554-5",
            "display": "GLUCOSE",
        }
        (patient,) = resources(report.bundle, "Patient")
        ms_patient = resources(converter("ORU-R01-RMGEAD-expected.json"), "Patient")[0]
        assert patient["identifier"][0]["value"] == ms_patient["identifier"][0]["value"]

    def test_python_hl7_sample_tolerates_its_broken_fields(self) -> None:
        (report,) = mapped("pythonhl7_sample_hl7_oru.hl7").reports
        (patient,) = resources(report.bundle, "Patient")
        assert "birthDate" not in patient  # 196203520 is not a date: dropped, not fatal
        glucose, fn = resources(report.bundle, "Observation")
        assert fn["valueQuantity"] == glucose["valueQuantity"] == {"value": 182, "unit": "mg/dl"}
        (dr,) = resources(report.bundle, "DiagnosticReport")
        assert dr["status"] == "final"  # OBR-25 empty; both OBX final
        assert dr["meta"]["lastUpdated"] == "2002-02-15T09:30:00+08:00"  # zone-less MSH-7


class TestCernerShiftedObx:
    name = "nodehl7_bicp_ORUR01.hl7"

    def test_shifted_obx_is_refused_naming_the_field(self) -> None:
        with pytest.raises(Hl7MappingError) as info:
            mapped(self.name)
        assert info.value.location == ErrorLocation("OBX", 1, 5)
        assert info.value.hl7_error == 102 and not info.value.reject

    def test_interface_setting_puts_the_missing_obx4_back(self) -> None:
        message = mapped(self.name, InterfaceConfig(obx_without_sub_id=True))
        (report,) = message.reports
        (obs,) = resources(report.bundle, "Observation")
        assert obs["code"]["coding"][0] == {
            "system": LAB_CODE,
            "code": "GLU",
            "display": "Glucose Lvl",
        }
        assert obs["valueQuantity"] == {
            "value": 59,
            "unit": "mg/dL",
            "system": UCUM,
            "code": "mg/dL",
        }
        assert obs["interpretation"][0]["coding"][0]["code"] == "L"
        assert obs["referenceRange"][0]["low"]["value"] == 65
        assert obs["status"] == "final"
        (dr,) = resources(report.bundle, "DiagnosticReport")
        assert "meta" not in dr  # MSH-7 is empty...
        (result,) = results(message)
        assert result.version.source_time == instant("2006-11-22T15:47:33+08:00")  # ...OBR-22


class TestV22Microbiology:
    name = "nodehl7_birp_ORUR01.hl7"

    def test_child_order_sharing_the_filler_number_gets_its_own_identity(self) -> None:
        culture, child = mapped(self.name).reports
        (parent_obs,) = resources(culture.bundle, "Observation")
        assert parent_obs["valueString"] == "FINALREPORT"
        assert parent_obs["effectiveDateTime"] == "1998-07-29T16:05:00+08:00"  # " 1998..."
        first, second = resources(child.bundle, "Observation")
        assert first["valueCodeableConcept"] == {"coding": [{"code": "M415"}], "text": "M415"}
        assert [n["text"] for n in first["note"]] == [
            "MORAXELLA (BRANHAMELLA) CATARRHALIS",
            "HEAVY GROWTH",
            "BETA LACTAMASE POSITIVE",
        ]
        assert second["note"] == [{"text": "ROUTINE RESPIRATORY FLORA"}]

    def test_ssn_placeholder_is_not_an_identifier(self) -> None:
        (patient,) = resources(mapped(self.name).reports[0].bundle, "Patient")
        assert [i["value"] for i in patient["identifier"]] == ["20809880170"]
