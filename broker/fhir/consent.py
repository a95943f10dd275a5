"""A consent record as a FHIR R4 `Consent` resource (pure, no I/O).

FHIR R4 Consent (hl7.org/fhir/R4/consent.html): `status` active, or inactive once
withdrawn or expired; `scope` consentscope#patient-privacy; `category` LOINC 59284-0
(Patient Consent); `patient` the mrb person; `dateTime` when recorded; `performer` the
patient (the grantor); `organization` the hospital that recorded it; `sourceReference` the
evidence (an identifier of the signed form the hospital keeps, never its content);
`policyRule` v3-ActCode OPTOUT or OPTIN (invariant ppc-1: a policy or a policy rule);
`provision` deny (opt-out of cross-hospital sharing) or permit (one sensitive category, in
`provision.code`), with `period` from recording to expiry or withdrawal. Who recorded it is
an mrb extension (Consent has no element for the clerk).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.domain.consent import ConsentKind, ConsentRecord
from broker.fhir.resources import instant

SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CATEGORY_SYSTEM = "urn:mrb:sensitive-category"
EVIDENCE_SYSTEM = "urn:mrb:consent-evidence:"  # + the recording hospital
HOSPITAL_SYSTEM = "urn:mrb:hospital"
ACTOR_SYSTEM = "urn:mrb:actor"
RECORDED_BY = "urn:mrb:fhir:extension:consent-recorded-by"
WITHDRAWN = "urn:mrb:fhir:extension:consent-withdrawn"


def consent_resource(
    record: ConsentRecord, person_id: str, now: datetime, names: dict[str, str]
) -> dict[str, Any]:
    """The Consent for one record; `names`: sensitive category code -> display."""
    opt_out = record.kind is ConsentKind.OPT_OUT
    end = min((t for t in (record.expires_at, record.withdrawn_at) if t is not None), default=None)
    period: dict[str, str] = {"start": instant(record.recorded_at)}
    if end is not None:
        period["end"] = instant(end)
    provision: dict[str, Any] = {"type": "deny" if opt_out else "permit", "period": period}
    if not opt_out and record.category:
        coding = {"system": CATEGORY_SYSTEM, "code": record.category}
        if record.category in names:
            coding["display"] = names[record.category]
        provision["code"] = [{"coding": [coding]}]
    recorded_by: dict[str, Any] = {
        "url": RECORDED_BY,
        "valueReference": {
            "identifier": {"system": ACTOR_SYSTEM, "value": record.recorded_by},
            "display": f"{record.recorded_by} ({record.recorded_role}, {record.recorded_hospital})",
        },
    }
    extensions = [recorded_by]
    if record.withdrawn_at is not None:
        extensions.append(
            {
                "url": WITHDRAWN,
                "extension": [
                    {"url": "at", "valueDateTime": instant(record.withdrawn_at)},
                    {"url": "by", "valueString": record.withdrawn_by or ""},
                ],
            }
        )
    rule = "OPTOUT" if opt_out else "OPTIN"
    return {
        "resourceType": "Consent",
        "id": record.id,
        "meta": {"lastUpdated": instant(record.withdrawn_at or record.recorded_at)},
        "extension": extensions,
        "status": record.status(now),
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [
            {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}
        ],
        "patient": {"reference": f"Patient/{person_id}"},
        "dateTime": instant(record.recorded_at),
        "performer": [{"reference": f"Patient/{person_id}"}],
        "organization": [
            {"identifier": {"system": HOSPITAL_SYSTEM, "value": record.recorded_hospital}}
        ],
        "sourceReference": {
            "identifier": {
                "system": EVIDENCE_SYSTEM + record.recorded_hospital,
                "value": record.evidence,
            }
        },
        "policyRule": {"coding": [{"system": ACT_CODE, "code": rule}]},
        "provision": provision,
    }


def consent_capability() -> dict[str, Any]:
    """The CapabilityStatement entry for Consent (read and search by patient)."""
    return {
        "type": "Consent",
        "profile": "http://hl7.org/fhir/StructureDefinition/Consent",
        "interaction": [
            {
                "code": "read",
                "documentation": "a doctor of a hospital that holds results of the patient",
            },
            {
                "code": "search-type",
                "documentation": "by patient, for a doctor of a hospital that holds results "
                "of the patient; another hospital's doctor finds none",
            },
        ],
        "searchParam": [
            {
                "name": "patient",
                "type": "reference",
                "documentation": "Patient/{id} or {id} (mrb's person id), or "
                "patient:identifier=system|value",
            },
            {"name": "status", "type": "token", "documentation": "active or inactive"},
        ],
    }
