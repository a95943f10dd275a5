"""The patient-rights story of the demo (issue "Patient rights"): one patient's HIV
antibody result from H001, which H002 may not see until the patient consents.

The message goes through the adapters with the rest of the sample; broker/cli/demo_rights.py
then tells the story through the public API: H002's check answers the item EXCLUDED (the
answer it gives when no result exists: 艾滋病防治条例 Art. 39), a consent recorded at H001
reveals the result, its withdrawal hides it again on the next check, an emergency read
with a reason (break-glass) reads it anyway and is flagged, and the patient's access report
lists every one of those reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.demo.dataset import (
    FHIR_R4_JSON,
    NATIONAL_ID_SYSTEM,
    DemoMessage,
    resident_id_check_digit,
)
from broker.demo.fhir_build import CST, det_uuid, routing_key, ts

LOINC = "http://loinc.org"
HIV_ANTIBODY = "56888-1"  # catalog LAB-ANTI-HIV, category HIV in schemas/catalog/sensitive.yaml
CATEGORY = "HIV"
ISSUER = "H001"  # holds the result and records what the patient signed there
VIEWER = "H002"  # another hospital: orders the same test
DAYS_AGO = 3  # within LAB-ANTI-HIV's 30-day validity (catalog.yaml)


@dataclass(frozen=True)
class RightsStory:
    message: DemoMessage
    national_id: str
    item: dict[str, Any]  # the ordered item, as the check API takes it


def build(seed: int, now: datetime) -> RightsStory:
    # Born 1969-09-09 in 泸州 (510502), female; a birth year no other demo patient uses.
    first17 = f"51050219690909{seed % 100:02d}4"
    national_id = first17 + resident_id_check_digit(first17)
    when = now.astimezone(CST).replace(second=0, microsecond=0) - timedelta(days=DAYS_AGO)
    return RightsStory(
        _hiv_result(seed, national_id, when),
        national_id,
        {"system": LOINC, "code": HIV_ANTIBODY},
    )


def _hiv_result(seed: int, national_id: str, when: datetime) -> DemoMessage:
    label = f"rights-hiv-{national_id[-4:]}"
    patient_url = f"urn:uuid:{det_uuid(seed, 'rights-pt', label)}"
    obs_id = det_uuid(seed, "rights-obs", label)
    report_id = det_uuid(seed, "rights-report", label)
    code = {"coding": [{"system": LOINC, "code": HIV_ANTIBODY, "display": "HIV 1+2 Ab+p24 Ag"}]}
    observation = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": code,
        "subject": {"reference": patient_url},
        "effectiveDateTime": ts(when),
        "issued": ts(when + timedelta(hours=4)),
        "valueQuantity": {"value": 0.12, "unit": "S/CO"},
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "identifier": [{"system": f"urn:mrb:demo:{ISSUER}:lab", "value": label}],
        "status": "final",
        "code": code,
        "subject": {"reference": patient_url},
        "effectiveDateTime": ts(when),
        "issued": ts(when + timedelta(hours=4)),
        "result": [{"reference": f"urn:uuid:{obs_id}"}],
    }
    patient = {
        "resourceType": "Patient",
        "id": det_uuid(seed, "rights-patient", label),
        "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": national_id}],
        "gender": "female",
        "birthDate": f"{national_id[6:10]}-{national_id[10:12]}-{national_id[12:14]}",
    }
    bundle = {
        "resourceType": "Bundle",
        "id": det_uuid(seed, "rights-bundle", label),
        "type": "collection",
        "entry": [
            {"fullUrl": patient_url, "resource": patient},
            {"fullUrl": f"urn:uuid:{report_id}", "resource": report},
            {"fullUrl": f"urn:uuid:{obs_id}", "resource": observation},
        ],
    }
    return DemoMessage(
        ISSUER,
        det_uuid(seed, "rights-message", label),
        routing_key(seed, ISSUER, national_id[-6:]),
        json.dumps(bundle, ensure_ascii=False).encode(),
        "indexed",
        None,
        "patient rights: a sensitive (HIV) result",
        FHIR_R4_JSON,
    )
