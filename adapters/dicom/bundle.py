"""A study as the FHIR R4 Bundle (type collection) the broker indexes (DESIGN.md, Kafka
contract): Patient, ImagingStudy, its DiagnosticReport when the study holds a report,
and the Endpoint images are retrieved from.

Element paths follow FHIR R4 ImagingStudy: identifier (urn:dicom:uid, then the
accession number typed ACSN), series.bodySite / series.laterality (SNOMED CT),
series.instance.sopClass (urn:ietf:rfc:3986). Ids are uuid5 of the hospital and the
DICOM UIDs, and nothing depends on the clock, so the bytes are reproducible.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from adapters.dicom.body_parts import BodyPart, body_part, modality_coding, region_from_code, side
from adapters.dicom.headers import InstanceHeaders
from adapters.dicom.patient import patient_identifiers, patient_resource
from adapters.dicom.sr import conclusion
from adapters.dicom.study import SeenInstance, Series, Study
from mrb_wire.fhir import CONTRAST_URL, DICOM_UID_SYSTEM

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mrb:adapter:dicom")
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ENDPOINT_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
LOINC = "http://loinc.org"
IMAGING_REPORT = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
Json = dict[str, Any]


@dataclass(frozen=True)
class BundleOptions:
    """How a hospital's studies are published."""

    hospital: str  # the registered hospital id, e.g. H001
    wado_rs_base: str | None = None  # DICOMweb WADO-RS base URL of the hospital's archive
    body_part_overrides: Mapping[str, BodyPart] = field(default_factory=dict)
    national_id_issuers: frozenset[str] = frozenset()  # extra issuers meaning resident ID
    # Above this many instances the bundle keeps series counts but not the instance list,
    # so a large study stays far below the broker's 1 MiB message limit.
    max_listed_instances: int = 2000


@dataclass(frozen=True)
class StudyBundle:
    """One study's message value and what it holds (nothing identifying)."""

    study_uid: str
    value: bytes
    last_updated: datetime
    number_of_series: int
    number_of_instances: int
    report_status: str | None
    warnings: tuple[str, ...] = ()


def study_bundle(study: Study, options: BundleOptions) -> StudyBundle:
    """The study's Bundle as UTF-8 JSON bytes, with a summary for progress and logs."""
    doc, warnings = build_bundle(study, options)
    report = next(
        (
            e["resource"]
            for e in doc["entry"]
            if e["resource"]["resourceType"] == "DiagnosticReport"
        ),
        None,
    )
    images = study.images
    return StudyBundle(
        study_uid=study.uid,
        value=encode(doc),
        last_updated=study.last_seen,
        number_of_series=len({i.headers.series_uid for i in images}),
        number_of_instances=len(images),
        report_status=report["status"] if report else None,
        warnings=warnings,
    )


def encode(doc: Json) -> bytes:
    """Compact JSON, UTF-8 (Chinese names stay readable), key order as built."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def build_bundle(study: Study, options: BundleOptions) -> tuple[Json, tuple[str, ...]]:
    """The Bundle as a dict, and warnings about what could not be mapped."""
    hospital = options.hospital
    first = study.headers
    ids = patient_identifiers(first, hospital, options.national_id_issuers)
    warnings = list(ids.warnings)
    # Per study, so the id says nothing about the patient (uuid5 of an ID number could
    # be reversed by trying every number); the identifiers link the person.
    patient_id = _id(hospital, "patient", study.uid)
    study_id = _id(hospital, "study", study.uid)
    updated = instant(study.last_seen)
    entries = [(patient_id, patient_resource(patient_id, first, ids.identifiers))]
    endpoint_id = _id(hospital, "endpoint", options.wado_rs_base) if options.wado_rs_base else None
    imaging = imaging_study(study, options, study_id, patient_id, endpoint_id, warnings)
    entries.append((study_id, imaging))
    if study.reports:
        report_id = _id(hospital, "report", study.uid)
        entries.append((report_id, report(study, report_id, study_id, patient_id)))
    if endpoint_id and options.wado_rs_base:
        entries.append((endpoint_id, endpoint(endpoint_id, options.wado_rs_base)))
    bundle: Json = {
        "resourceType": "Bundle",
        "id": _id(hospital, "bundle", study.uid, updated, str(len(study.instances))),
        "type": "collection",
        "timestamp": updated,
        "entry": [{"fullUrl": f"urn:uuid:{rid}", "resource": res} for rid, res in entries],
    }
    return bundle, tuple(warnings)


def imaging_study(
    study: Study,
    options: BundleOptions,
    study_id: str,
    patient_id: str,
    endpoint_id: str | None,
    warnings: list[str],
) -> Json:
    """FHIR R4 ImagingStudy of the study's image series (reports become the DiagnosticReport)."""
    series = study.series()
    listed = len(study.images) <= options.max_listed_instances
    contrast = any(i.headers.contrast for i in study.images)
    res: Json = {
        "resourceType": "ImagingStudy",
        "id": study_id,
        # lastUpdated: when the adapter first saw the study's newest instance; versionId:
        # how many instances it holds, which orders two versions seen in the same instant.
        "meta": {"versionId": str(len(study.instances)), "lastUpdated": instant(study.last_seen)},
        "extension": [{"url": CONTRAST_URL, "valueBoolean": contrast}],
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.uid}"}],
        # available: the images can be retrieved; registered: only a report arrived so far
        "status": "available" if series else "registered",
    }
    accession = study.first("accession")
    if isinstance(accession, str):
        res["identifier"].append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "system": f"urn:mrb:hospital:{options.hospital}:accession",
                "value": accession,
            }
        )
    modalities = list(dict.fromkeys(modality_coding(s.modality)["code"] for s in series))
    if modalities:
        res["modality"] = [modality_coding(m) for m in modalities]
    res["subject"] = {"reference": f"urn:uuid:{patient_id}"}
    started = study.first("started")
    if isinstance(started, date):
        res["started"] = fhir_datetime(started)
    if endpoint_id:
        res["endpoint"] = [{"reference": f"urn:uuid:{endpoint_id}"}]
    res["numberOfSeries"] = len(series)
    res["numberOfInstances"] = sum(len(s.instances) for s in series)
    description = study.first("study_description")
    if isinstance(description, str):
        res["description"] = description
    if series:
        res["series"] = [_series(s, options, listed, warnings) for s in series]
    return res


def _series(series: Series, options: BundleOptions, listed: bool, warnings: list[str]) -> Json:
    out: Json = {"uid": series.uid}
    if series.number is not None:
        out["number"] = series.number
    out["modality"] = modality_coding(series.modality)
    if series.description:
        out["description"] = series.description
    out["numberOfInstances"] = len(series.instances)
    site = _body_site(series.instances, options, warnings)
    if site is not None:
        out["bodySite"] = site
    lateral = side(_laterality(series.instances))
    if lateral is not None:
        out["laterality"] = lateral.coding()
    if listed:
        out["instance"] = [_instance(i.headers) for i in series.instances]
    return out


def _instance(h: InstanceHeaders) -> Json:
    out: Json = {
        "uid": h.sop_instance_uid,
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{h.sop_class_uid}"},
    }
    if h.instance_number is not None:
        out["number"] = h.instance_number
    return out


def _body_site(
    instances: tuple[SeenInstance, ...], options: BundleOptions, warnings: list[str]
) -> Json | None:
    """Body Part Examined (Annex L), else Anatomic Region Sequence coded in SNOMED CT."""
    unknown: str | None = None
    for inst in instances:
        h = inst.headers
        part = body_part(h.body_part, options.body_part_overrides)
        if part is None and h.anatomic_region is not None:
            part = region_from_code(*h.anatomic_region)
        if part is not None:
            return part.coding()
        unknown = unknown or h.body_part
    if unknown is None:
        return None
    warnings.append(f"Body Part Examined {unknown!r} has no SNOMED CT mapping")
    return {"display": unknown}  # kept for people; matches no catalog item


def _laterality(instances: tuple[SeenInstance, ...]) -> str | None:
    """Laterality (0020,0060) of the series, else the Image Laterality of its images."""
    for inst in instances:
        if inst.headers.laterality in ("R", "L", "B"):
            return inst.headers.laterality
    sides = {i.headers.image_laterality for i in instances} & {"R", "L", "B"}
    if len(sides) == 1:
        return sides.pop()
    return "B" if sides else None


def report(study: Study, report_id: str, study_id: str, patient_id: str) -> Json:
    """DiagnosticReport of the study's newest report object (the verified one first)."""
    chosen = max(study.reports, key=_report_rank).headers
    final = chosen.completion_flag == "COMPLETE" and chosen.verification_flag == "VERIFIED"
    res: Json = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "meta": {"lastUpdated": instant(study.last_seen)},
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{chosen.sop_instance_uid}"}],
        "status": "final" if final else "preliminary",
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [IMAGING_REPORT], "text": chosen.document_title or "Imaging report"},
        "subject": {"reference": f"urn:uuid:{patient_id}"},
    }
    started = study.first("started")
    if isinstance(started, date):
        res["effectiveDateTime"] = fhir_datetime(started)
    if chosen.content_time is not None:
        res["issued"] = fhir_datetime(chosen.content_time, seconds=True)
    if chosen.institution:
        res["performer"] = [{"display": chosen.institution}]
    res["imagingStudy"] = [{"reference": f"urn:uuid:{study_id}"}]
    text = conclusion(chosen.report_text)
    if text:
        res["conclusion"] = text
    return res


def _report_rank(inst: SeenInstance) -> tuple[bool, float, str]:
    h = inst.headers
    verified = h.completion_flag == "COMPLETE" and h.verification_flag == "VERIFIED"
    return verified, (h.content_time or inst.seen_at).timestamp(), h.sop_instance_uid


def endpoint(endpoint_id: str, address: str) -> Json:
    """The hospital's DICOMweb WADO-RS service (FHIR R4 Endpoint)."""
    return {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {"system": ENDPOINT_TYPES, "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def instant(value: datetime) -> str:
    """A FHIR instant in UTC with milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fhir_datetime(value: date, *, seconds: bool = False) -> str:
    """A FHIR dateTime: the date alone, or date and time with the offset it was taken in."""
    if not isinstance(value, datetime):
        return value.isoformat()
    spec = "seconds" if value.microsecond == 0 or seconds else "milliseconds"
    return value.isoformat(timespec=spec)


def _id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))
