"""The recognition rules v2 story of the demo: four patients whose results show what the
rules refuse or warn about, each proven by a real check on what the demo ingested.

- a haemoglobin measured on a haemolysed specimen (Specimen.condition v2-0493 HEM):
  NO_VALUE;
- a recognisable haemoglobin with a newer, lower one from another hospital: RECOGNIZABLE
  with a newer-result warning naming it;
- a left-knee MRI when the right knee is ordered: NO_PRIOR_RESULT, the near miss listed;
- a Chongqing hospital's haemoglobin marked 川渝HR, ordered in Luzhou: RECOGNIZABLE
  across the provincial border under the 川渝 agreement (schemas/policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.demo.dataset import (
    FHIR_R4_JSON,
    NATIONAL_ID_SYSTEM,
    DemoHospital,
    DemoMessage,
    resident_id_check_digit,
)
from broker.demo.fhir_build import CST, det_uuid, routing_key, ts
from mrb_wire.fhir import CONTRAST_URL
from mrb_wire.fhir import RECOGNITION_MARK_URL as MARK_URL

Json = dict[str, Any]
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
KNEE, LEFT, RIGHT = "72696002", "7771000", "24028007"
ORDERING = "H002"  # every scenario is ordered at 西南医科大学附属医院 (Luzhou)

# A third-level hospital across the border, in Chongqing (川渝 agreement).
CHONGQING = DemoHospital("H005", "重庆医科大学附属第一医院", "500103", "3")


@dataclass(frozen=True)
class ScenarioCheck:
    name: str  # no-value | newer-result | sided | agreement
    national_id: str
    item: Json  # the ordered item, as the API takes it
    decision: str  # what the rules must answer
    shows: str  # what the answer must show (in its English explanation or warnings)


@dataclass(frozen=True)
class Scenarios:
    messages: tuple[DemoMessage, ...]
    checks: tuple[ScenarioCheck, ...]


def build(seed: int, now: datetime) -> Scenarios:
    base = now.astimezone(CST).replace(second=0, microsecond=0)
    ids = [_resident_id(seed, i) for i in range(4)]
    hb = {"system": LOINC, "code": "718-7"}
    messages = [
        _lab(seed, "H001", ids[0], base - timedelta(days=1), 131, haemolysed=True),
        _lab(seed, "H001", ids[1], base - timedelta(days=5), 128),
        _lab(seed, "H003", ids[1], base - timedelta(days=1), 96, flags=("L",)),
        _knee(seed, "H001", ids[2], base - timedelta(days=20), LEFT),
        _lab(seed, CHONGQING.id, ids[3], base - timedelta(days=2), 142, mark="川渝HR"),
    ]
    right_knee = {
        "modality": "MR",
        "body_site": {"system": SNOMED, "code": KNEE},
        "laterality": {"system": SNOMED, "code": RIGHT},
    }
    checks = (
        ScenarioCheck("no-value", ids[0], hb, "NO_VALUE", "haemolysed"),
        ScenarioCheck("newer-result", ids[1], hb, "RECOGNIZABLE", "newer result"),
        ScenarioCheck("sided", ids[2], right_knee, "NO_PRIOR_RESULT", "left side"),
        ScenarioCheck("agreement", ids[3], hb, "RECOGNIZABLE", "Sichuan–Chongqing"),
    )
    return Scenarios(tuple(messages), checks)


def _resident_id(seed: int, n: int) -> str:
    # Born 1975-1978 in 泸州 (510502) or 重庆 (500103); check digit per GB 11643.
    region = "500103" if n == 3 else "510502"
    first17 = f"{region}{1975 + n}0{n + 1}1{n}{(seed + n) % 1000:03d}"
    return first17 + resident_id_check_digit(first17)


def _patient(seed: int, hospital: str, national_id: str) -> Json:
    return {
        "resourceType": "Patient",
        "id": det_uuid(seed, "scenario-patient", hospital, national_id[-4:]),
        "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": national_id}],
        "birthDate": f"{national_id[6:10]}-{national_id[10:12]}-{national_id[12:14]}",
    }


def _message(
    seed: int, hospital: str, national_id: str, label: str, entries: list[Json]
) -> DemoMessage:
    body = {
        "resourceType": "Bundle",
        "id": det_uuid(seed, "scenario-bundle", label),
        "type": "collection",
        "entry": entries,
    }
    return DemoMessage(
        hospital,
        det_uuid(seed, "scenario-message", label),
        routing_key(seed, hospital, national_id[-6:]),
        json.dumps(body, ensure_ascii=False).encode(),
        "indexed",
        None,
        f"rules v2 scenario: {label}",
        FHIR_R4_JSON,
    )


def _lab(
    seed: int,
    hospital: str,
    national_id: str,
    when: datetime,
    grams_per_litre: int,
    *,
    haemolysed: bool = False,
    flags: tuple[str, ...] = (),
    mark: str | None = None,
) -> DemoMessage:
    label = f"hb-{hospital}-{national_id[-4:]}-{when.date().isoformat()}"
    patient_url = f"urn:uuid:{det_uuid(seed, 'scenario-pt', label)}"
    obs: Json = {
        "resourceType": "Observation",
        "id": det_uuid(seed, "scenario-obs", label),
        "identifier": [{"system": f"urn:mrb:demo:{hospital}:lab", "value": label}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
        "subject": {"reference": patient_url},
        "effectiveDateTime": ts(when),
        "issued": ts(when + timedelta(hours=2)),
        "valueQuantity": {
            "value": grams_per_litre,
            "unit": "g/L",
            "system": "http://unitsofmeasure.org",
            "code": "g/L",
        },
    }
    if flags:
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": f} for f in flags]}]
    if mark:
        obs["extension"] = [{"url": MARK_URL, "valueString": mark}]
    entries = [
        {"fullUrl": patient_url, "resource": _patient(seed, hospital, national_id)},
        {"fullUrl": f"urn:uuid:{obs['id']}", "resource": obs},
    ]
    if haemolysed:
        specimen_id = det_uuid(seed, "scenario-specimen", label)
        obs["specimen"] = {"reference": f"urn:uuid:{specimen_id}"}
        specimen = {
            "resourceType": "Specimen",
            "id": specimen_id,
            "subject": {"reference": patient_url},
            "condition": [
                {
                    "coding": [{"system": V2_0493, "code": "HEM", "display": "Hemolyzed"}],
                    "text": "溶血",
                }
            ],
        }
        entries.append({"fullUrl": f"urn:uuid:{specimen_id}", "resource": specimen})
    return _message(seed, hospital, national_id, label, entries)


def _knee(seed: int, hospital: str, national_id: str, when: datetime, side: str) -> DemoMessage:
    label = f"knee-{hospital}-{national_id[-4:]}"
    patient_url = f"urn:uuid:{det_uuid(seed, 'scenario-pt', label)}"
    uid = "2.25." + str(int(det_uuid(seed, "scenario-study", label).replace("-", ""), 16))
    modality = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}
    study = {
        "resourceType": "ImagingStudy",
        "id": det_uuid(seed, "scenario-study-id", label),
        "extension": [{"url": CONTRAST_URL, "valueBoolean": False}],
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "status": "available",
        "subject": {"reference": patient_url},
        "started": ts(when),
        "modality": [modality],
        "description": "膝关节MRI平扫",
        "series": [
            {
                "uid": f"{uid}.1",
                "modality": modality,
                "bodySite": {"system": SNOMED, "code": KNEE, "display": "Knee"},
                "laterality": {"system": SNOMED, "code": side, "display": "Left"},
                "numberOfInstances": 24,
            }
        ],
    }
    entries = [
        {"fullUrl": patient_url, "resource": _patient(seed, hospital, national_id)},
        {"fullUrl": f"urn:uuid:{study['id']}", "resource": study},
    ]
    return _message(seed, hospital, national_id, label, entries)
