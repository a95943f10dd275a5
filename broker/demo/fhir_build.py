"""FHIR R4 JSON for the demo: one Bundle per result version, as a hospital adapter sends it.

Plain dicts (no FHIR models) so the bytes are exactly what we choose, including the
deliberate quirks (zone-less times, local-only codes) a model would normalise away.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from broker.demo.catalog_sample import (
    LATERALITY,
    LOINC,
    SNOMED,
    Analyte,
    ImagingKind,
    LabPanel,
)
from mrb_wire.fhir import CONTRAST_URL, RECOGNITION_MARK_URL
from mrb_wire.fhir import RESIDENT_ID_SYSTEM as NATIONAL_ID_SYSTEM

Json = dict[str, Any]

CST = timezone(timedelta(hours=8), "+08:00")

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mrb:demo")


def det_uuid(seed: int, *parts: object) -> str:
    """A UUID fixed by the seed and a label, so reruns produce the same bytes."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(p) for p in (seed, *parts))))


def dicom_uid(seed: int, *parts: object) -> str:
    # 2.25.<uuid as integer> is the DICOM-sanctioned way to mint UIDs without an org root.
    return "2.25." + str(uuid.UUID(det_uuid(seed, *parts)).int)


def routing_key(seed: int, hospital: str, patient: object) -> bytes:
    """Kafka key: opaque per patient and hospital (keeps their messages in order)."""
    digest = hashlib.sha256(f"{seed}:{hospital}:{patient}".encode()).hexdigest()
    return digest[:16].encode()


def ts(moment: datetime, *, zoned: bool = True) -> str:
    local = moment.astimezone(CST)
    return (local if zoned else local.replace(tzinfo=None)).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Site:
    """What a message needs to know about its sending hospital."""

    id: str
    name: str
    number: int
    mark: str | None  # recognition mark put on every result item, if any
    computed_radiography: bool  # chest films come as CR instead of DX

    @property
    def mrn_system(self) -> str:
        return f"urn:oid:2.16.156.10011.0.{self.number}.mrn"


@dataclass(frozen=True)
class Person:
    index: int
    national_id: str
    family: str
    given: str
    gender: str
    birth_date: str
    mrns: Mapping[str, str]  # hospital id -> MRN
    registered: Mapping[str, datetime]  # hospital id -> Patient.meta.lastUpdated


@dataclass(frozen=True)
class ResultPlan:
    """One result (a lab report or an imaging study) before any version is rendered."""

    key: str
    person: Person
    site: Site
    collected: datetime
    issued: datetime
    recorded: datetime  # meta.lastUpdated of version 1
    accession: str
    item: LabPanel | ImagingKind
    values: tuple[float | bool, ...] = ()
    laterality: str | None = None
    instances: tuple[int, ...] = ()  # per series
    conclusion: str = ""
    with_report: bool = True
    transaction: bool = False
    zoneless: bool = False
    local_codes: bool = False

    @property
    def note(self) -> str:
        side = f" {self.laterality}" if self.laterality else ""
        return self.item.note + side


@dataclass(frozen=True)
class Version:
    result: ResultPlan
    number: int
    status: str  # the report's status: final, amended, corrected, cancelled, entered-in-error
    updated: datetime
    values: tuple[float | bool, ...]
    changed: int | None = None  # analyte whose value an amendment changed


def render(
    version: Version,
    seed: int,
    *,
    national_id: bool = True,
    mrn: bool = True,
    subject: str | None = None,
) -> bytes:
    """The Kafka value for one result version.

    `national_id=False` sends only the MRN; `subject` references a Patient the Bundle
    does not contain (and leaves the Patient out).
    """
    r = version.result
    entries: list[tuple[str, Json]] = []
    patient_url = subject or f"urn:uuid:{det_uuid(seed, 'patient', r.person.index, r.site.id)}"
    if subject is None:
        entries.append((patient_url, patient(r.person, r.site, seed, national_id, mrn)))
    if isinstance(r.item, LabPanel):
        entries += _lab(version, r.item, seed, patient_url)
    else:
        entries += _imaging(version, r.item, seed, patient_url)
    body: Json = {
        "resourceType": "Bundle",
        "id": det_uuid(seed, "bundle", r.key, version.number),
        "type": "transaction" if r.transaction else "collection",
        "timestamp": ts(version.updated),
        "entry": [_entry(url, res, r.transaction) for url, res in entries],
    }
    return dump(body)


def dump(body: Json) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def patient(person: Person, site: Site, seed: int, national_id: bool, mrn: bool) -> Json:
    identifiers: list[Json] = []
    if national_id:
        identifiers.append({"system": NATIONAL_ID_SYSTEM, "value": person.national_id})
    if mrn:
        identifiers.append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": site.mrn_system,
                "value": person.mrns[site.id],
            }
        )
    return {
        "resourceType": "Patient",
        "id": det_uuid(seed, "patient", person.index, site.id),
        "meta": _meta("1", person.registered[site.id]),
        "identifier": identifiers,
        "name": [
            {
                "use": "official",
                "text": person.family + person.given,
                "family": person.family,
                "given": [person.given],
            }
        ],
        "gender": person.gender,
        "birthDate": person.birth_date,
    }


def _entry(url: str, resource: Json, transaction: bool) -> Json:
    entry: Json = {"fullUrl": url, "resource": resource}
    if transaction:
        entry["request"] = {"method": "PUT", "url": _conditional_url(resource)}
    return entry


def _conditional_url(resource: Json) -> str:
    # Update-or-create on the business identifier, as an interface engine would send it.
    kind = resource["resourceType"]
    identifiers = resource.get("identifier")
    if not identifiers:
        return f"{kind}/{resource['id']}"
    first = identifiers[0]
    return f"{kind}?identifier={first['system']}|{first['value']}"


def _meta(version_id: str, updated: datetime) -> Json:
    return {"versionId": version_id, "lastUpdated": ts(updated)}


def _codeable(system: str, code: str, display: str, text: str | None = None) -> Json:
    concept: Json = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        concept["text"] = text
    return concept


def _extensions(site: Site, contrast: bool | None = None) -> list[Json]:
    """The mark; for a study also its contrast, always stated (as the DICOM adapter does):
    a study whose protocol is unknown never matches a plain or enhanced order."""
    ext: list[Json] = []
    if site.mark:
        ext.append({"url": RECOGNITION_MARK_URL, "valueString": site.mark})
    if contrast is not None:
        ext.append({"url": CONTRAST_URL, "valueBoolean": contrast})
    return ext


def _report(version: Version, seed: int, patient_url: str, code: Json, *, lab: bool) -> Json:
    r = version.result
    kind = "lab-report" if lab else "imaging-report"
    return {
        "resourceType": "DiagnosticReport",
        "id": det_uuid(seed, "report", r.key),
        "meta": _meta(str(version.number), version.updated),
        "identifier": [{"system": f"urn:mrb:hospital:{r.site.id}:{kind}", "value": r.accession}],
        "status": version.status,
        "category": [
            _codeable(V2_0074, "LAB" if lab else "RAD", "Laboratory" if lab else "Radiology")
        ],
        "code": code,
        "subject": {"reference": patient_url},
        "effectiveDateTime": ts(r.collected, zoned=not r.zoneless),
        # issued is when *this version* was released, so a revision moves it.
        "issued": ts(r.issued if version.number == 1 else version.updated),
        "performer": [{"display": r.site.name}],
    }


def _lab(version: Version, panel: LabPanel, seed: int, patient_url: str) -> list[tuple[str, Json]]:
    r = version.result
    observations = [
        (
            f"urn:uuid:{det_uuid(seed, 'obs', r.key, i)}",
            _observation(version, a, i, seed, patient_url),
        )
        for i, a in enumerate(panel.analytes)
    ]
    code = _codeable(LOINC, panel.loinc, panel.display, panel.zh)
    report = _report(version, seed, patient_url, code, lab=True)
    report["result"] = [{"reference": url} for url, _ in observations]
    return [(f"urn:uuid:{report['id']}", report), *observations]


def _observation(version: Version, a: Analyte, i: int, seed: int, patient_url: str) -> Json:
    r = version.result
    withdrawn = version.status in ("cancelled", "entered-in-error")
    touched = version.number > 1 and (withdrawn or version.changed == i)
    obs: Json = {
        "resourceType": "Observation",
        "id": det_uuid(seed, "obs", r.key, i),
        "meta": _meta(str(version.number), version.updated) if touched else _meta("1", r.recorded),
    }
    if ext := _extensions(r.site):
        obs["extension"] = ext
    if version.status == "preliminary":
        obs["status"] = "preliminary"
    else:
        obs["status"] = version.status if touched else "final"
    obs["category"] = [_codeable(OBS_CATEGORY, "laboratory", "Laboratory")]
    if r.local_codes and a.local_code:
        local = f"urn:mrb:hospital:{r.site.id}:lab-code"
        obs["code"] = _codeable(local, a.local_code, a.zh, a.zh)
    else:
        obs["code"] = _codeable(LOINC, a.loinc, a.display, a.zh)
    obs["subject"] = {"reference": patient_url}
    obs["effectiveDateTime"] = ts(r.collected, zoned=not r.zoneless)
    value = version.values[i]
    if a.qualitative:
        positive = bool(value)
        obs["valueCodeableConcept"] = (
            _codeable(SNOMED, "10828004", "Positive", "阳性")
            if positive
            else _codeable(SNOMED, "260385009", "Negative", "阴性")
        )
        if positive:
            obs["interpretation"] = [_codeable(INTERPRETATION, "POS", "Positive")]
        obs["referenceRange"] = [{"text": "阴性"}]
        return obs
    value = float(value)
    low, high = a.female if a.female and r.person.gender == "female" else (a.low, a.high)
    obs["valueQuantity"] = _quantity(value, a.decimals, a.unit, a.ucum)
    if value > high or value < low:
        flag = ("H", "High") if value > high else ("L", "Low")
        obs["interpretation"] = [_codeable(INTERPRETATION, *flag)]
    obs["referenceRange"] = [
        {
            "low": _quantity(low, a.decimals, a.unit, a.ucum),
            "high": _quantity(high, a.decimals, a.unit, a.ucum),
        }
    ]
    return obs


def _quantity(value: float, decimals: int, unit: str, ucum: str) -> Json:
    number: float | int = round(value, decimals) if decimals else round(value)
    return {"value": number, "unit": unit, "system": UCUM, "code": ucum}


def _imaging(
    version: Version, kind: ImagingKind, seed: int, patient_url: str
) -> list[tuple[str, Json]]:
    r = version.result
    modality = "CR" if kind.modality == "DX" and r.site.computed_radiography else kind.modality
    body: Json = {"system": SNOMED, "code": kind.body_code, "display": kind.body_display}
    side = LATERALITY.get(r.laterality or "")
    series = []
    for n, count in enumerate(r.instances, start=1):
        s: Json = {
            "uid": dicom_uid(seed, "series", r.key, n),
            "number": n,
            "modality": {"system": DCM, "code": modality},
            "numberOfInstances": count,
            "bodySite": body,
        }
        if side:
            s["laterality"] = {"system": SNOMED, "code": side[0], "display": side[1]}
        series.append(s)
    withdrawn = version.status in ("cancelled", "entered-in-error")
    study: Json = {
        "resourceType": "ImagingStudy",
        "id": det_uuid(seed, "study", r.key),
        "meta": _meta(str(version.number), version.updated),
    }
    if ext := _extensions(r.site, kind.contrast):
        study["extension"] = ext
    study |= {
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:" + dicom_uid(seed, "study", r.key)},
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "system": f"urn:mrb:hospital:{r.site.id}:accession",
                "value": r.accession,
            },
        ],
        "status": version.status if withdrawn else "available",
        "modality": [{"system": DCM, "code": modality}],
        "subject": {"reference": patient_url},
        "started": ts(r.collected, zoned=not r.zoneless),
        "numberOfSeries": len(series),
        "numberOfInstances": sum(r.instances),
        "procedureCode": [
            {
                "coding": [{"system": LOINC, "code": kind.loinc, "display": kind.loinc_display}],
                "text": (side[2] if side else "") + kind.zh,
            }
        ],
        "series": series,
    }
    study_url = f"urn:uuid:{study['id']}"
    if not r.with_report:
        return [(study_url, study)]
    code = _codeable(LOINC, kind.loinc, kind.loinc_display, kind.zh)
    report = _report(version, seed, patient_url, code, lab=False)
    report["imagingStudy"] = [{"reference": study_url}]
    report["conclusion"] = r.conclusion
    return [(study_url, study), (f"urn:uuid:{report['id']}", report)]
