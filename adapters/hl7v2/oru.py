"""ORU^R01 -> FHIR R4: one collection Bundle per ORDER_OBSERVATION (OBR group).

Follows the HL7 v2-to-FHIR IG (segment maps OBR -> DiagnosticReport, OBX ->
Observation, PID -> Patient, SPM -> Specimen). Each Bundle holds the Patient, the
DiagnosticReport (OBR-3 filler order number as its first identifier: the result's
business id), its Observations and one Specimen per SPM of the group, with deterministic
ids so a corrected report keeps its resource ids.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from adapters.hl7v2 import observation as obs
from adapters.hl7v2 import specimen as spm_map
from adapters.hl7v2.charset import decode_message
from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.identity import OrderSegments, report_identifiers
from adapters.hl7v2.jsonout import dumps
from adapters.hl7v2.msh import MessageHeader, read_header
from adapters.hl7v2.patient import patient_identifiers, patient_resource
from adapters.hl7v2.segments import Segment, parse_segments
from adapters.hl7v2.tables import REPORT_STATUS, REPORT_STATUS_ERRORS
from adapters.hl7v2.tables import report_status_from_observations as derived_status
from adapters.hl7v2.timestamps import Hl7TimeError, fhir_datetime, fhir_instant
from adapters.hl7v2.values import codeable
from mrb_wire.fhir import RECOGNITION_MARK_URL

Json = dict[str, Any]

_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mrb:adapter:hl7v2")
_VERSION = re.compile(r"2\.(\d+)(?:\.\d+)*")


@dataclass(frozen=True)
class MappedReport:
    """One OBR group as a Bundle, and the identity the broker will index it under."""

    group: int  # 1-based position of the OBR group in the message
    business_id: tuple[str, str]  # DiagnosticReport.identifier[0] (system, value)
    value: bytes  # the Bundle as the JSON bytes to publish (decimals exactly as sent)

    @property
    def bundle(self) -> Json:
        """The Bundle as plain JSON (decimals as floats: read `value` for exact digits)."""
        doc: Json = json.loads(self.value)
        return doc


@dataclass(frozen=True)
class MappedMessage:
    header: MessageHeader
    encoding: str
    reports: tuple[MappedReport, ...]
    notes: tuple[str, ...]  # what was read but deliberately not mapped


@dataclass
class _Group:
    patient: Segment | None
    orc: Segment | None
    obr: Segment
    observations: list[obs.ObxEntry] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)


def map_message(
    raw: bytes, *, hospital: str, config: InterfaceConfig | None = None
) -> MappedMessage:
    """Decode and map one ORU^R01 message; raise Hl7MappingError with a precise code."""
    cfg = config or InterfaceConfig()
    decoded = decode_message(raw, fallback=cfg.fallback_encoding)
    header = read_header(decoded.text)
    if header is None:  # decode_message already checked; keeps the type checker honest
        raise Hl7MappingError(Hl7ErrorCode.PARSE, "no MSH segment")
    _check_header(header)
    segments = parse_segments(decoded.text)
    groups, notes = _groups(segments, cfg)
    if not groups:
        raise Hl7MappingError(
            Hl7ErrorCode.NO_RESULTS, "the message holds no OBR segment (order with results)"
        )
    reports = []
    used: set[tuple[str, str]] = set()
    for index, group in enumerate(groups, start=1):
        reports.append(_report(group, index, len(groups), header, hospital, cfg, used))
    return MappedMessage(header, decoded.encoding, tuple(reports), tuple(notes))


def _check_header(header: MessageHeader) -> None:
    where = ErrorLocation("MSH", 1, 9)
    if header.message_code != "ORU":
        shown = header.message_code[:10] or "empty"
        raise Hl7MappingError(
            Hl7ErrorCode.UNSUPPORTED_MESSAGE,
            f"MSH-9 message type {shown} is not supported; this interface accepts ORU^R01",
            location=where,
        )
    if header.trigger_event not in ("R01", ""):
        raise Hl7MappingError(
            Hl7ErrorCode.UNSUPPORTED_MESSAGE,
            f"MSH-9 event ORU^{header.trigger_event[:10]} is not supported; send ORU^R01",
            location=where,
            hl7_error=201,
        )
    version = header.version
    m = _VERSION.fullmatch(version)
    if version and (m is None or int(m[1]) < 2):
        raise Hl7MappingError(
            Hl7ErrorCode.UNSUPPORTED_VERSION,
            f"MSH-12 version {version[:12]!r} is not supported; send HL7 v2.2 to v2.5.1",
            location=ErrorLocation("MSH", 1, 12),
        )


def _groups(segments: list[Segment], cfg: InterfaceConfig) -> tuple[list[_Group], list[str]]:
    """ORU_R01 structure: PATIENT_RESULT { PID, ORDER_OBSERVATION { ORC, OBR, OBSERVATION
    { OBX, NTE* }*, SPECIMEN { SPM, OBX* }* }* }*. Unknown segments are skipped."""
    groups: list[_Group] = []
    notes: list[str] = []
    patient: Segment | None = None
    orc: Segment | None = None
    current: _Group | None = None
    last_obx: obs.ObxEntry | None = None
    in_specimen = False
    for seg in segments[1:]:
        if seg.name == "PID":
            patient, orc, current, last_obx = seg, None, None, None
        elif seg.name == "ORC":
            orc, current, last_obx = seg, None, None
        elif seg.name == "OBR":
            current = _Group(patient, orc, seg)
            groups.append(current)
            orc, last_obx, in_specimen = None, None, False
        elif seg.name == "SPM" and current is not None:
            current.specimens.append(seg)
            in_specimen, last_obx = True, None
        elif seg.name == "OBX":
            last_obx = None
            if current is None:
                notes.append(f"OBX[{seg.occurrence}] precedes any OBR: not part of a report")
            elif in_specimen:
                notes.append(f"OBX[{seg.occurrence}] describes the specimen (after SPM)")
            else:
                last_obx = obs.ObxEntry(_shifted(seg) if cfg.obx_without_sub_id else seg)
                current.observations.append(last_obx)
        elif seg.name == "NTE" and last_obx is not None:
            last_obx.notes.append(seg)
    return groups, notes


def _shifted(seg: Segment) -> Segment:
    """Put back the OBX-4 a sender left out, so OBX-5 onwards are where the standard says."""
    fields = [*seg.fields[:4], [[[""]]], *seg.fields[4:]]
    return Segment(seg.name, fields, seg.occurrence)


def _report(
    group: _Group,
    index: int,
    count: int,
    header: MessageHeader,
    hospital: str,
    cfg: InterfaceConfig,
    used: set[tuple[str, str]],
) -> MappedReport:
    obr = group.obr
    if group.patient is None:
        raise Hl7MappingError(
            Hl7ErrorCode.NO_PATIENT,
            f"OBR[{obr.occurrence}] has no PID before it: the result names no patient",
            location=ErrorLocation("PID", 1),
        )
    identifiers = patient_identifiers(group.patient, hospital)
    first = identifiers[0]
    patient_id = _uuid(hospital, "Patient", first.system, first.value)
    patient_url = f"urn:uuid:{patient_id}"
    orders = OrderSegments(group.obr, group.orc)
    identity = report_identifiers(orders, header, hospital, index, count, used)
    business = (identity[0]["system"], identity[0]["value"])
    report_id = _uuid(hospital, "DiagnosticReport", *business)
    times = _Times(cfg.zone)
    updated = times.instant(header.get(7), ErrorLocation("MSH", 1, 7))
    effective = times.datetime(obr.get(7), ErrorLocation("OBR", obr.occurrence, 7))
    for spm in group.specimens:  # SPM-17 specimen collection date/time (v2.5+)
        spm17 = times.datetime(spm.get(17), ErrorLocation("SPM", spm.occurrence, 17))
        effective = effective or spm17
    issued = times.instant(obr.get(22), ErrorLocation("OBR", obr.occurrence, 22))
    spm_context = spm_map.SpecimenContext(hospital, patient_url, updated, cfg.zone)
    specimens = [
        spm_map.specimen(seg, spm_context, _uuid(hospital, "Specimen", *business, key))
        for seg, key in spm_map.keyed(group.specimens)
    ]
    # The report names every specimen. v2.5.1 does not say which of several SPM an OBX
    # was measured on, so an observation names its specimen only when there is just
    # one: naming the first would hide a rejected second tube, whereas without a
    # reference a reader falls back to the report's list (all of them).
    only_specimen = f"urn:uuid:{specimens[0]['id']}" if len(specimens) == 1 else None
    context = obs.Context(
        hospital, patient_url, updated, effective, cfg.zone, cfg.mark_path, only_specimen
    )
    observations = [
        obs.observation(entry, context, _uuid(hospital, "Observation", *business, key))
        for entry, key in obs.keyed(group.observations)
    ]
    status = _report_status(obr, [o["status"] for o in observations if o["status"] != "unknown"])
    for o in observations:  # OBX-11 empty: the report's status speaks for it
        if o["status"] == "unknown":
            o["status"] = obs.status_from_report(status)
    report = _diagnostic_report(
        group, report_id, identity, status, observations, specimens, context, issued
    )
    patient = patient_resource(group.patient, patient_id, identifiers)
    entries = [(patient_url, patient), (f"urn:uuid:{report_id}", report)]
    entries += [(f"urn:uuid:{r['id']}", r) for r in (*observations, *specimens)]
    bundle: Json = {"resourceType": "Bundle", "type": "collection"}
    if updated:
        bundle["timestamp"] = updated
    bundle["entry"] = [{"fullUrl": url, "resource": res} for url, res in entries]
    return MappedReport(index, business, dumps(bundle))


def _diagnostic_report(
    group: _Group,
    report_id: str,
    identity: list[Json],
    status: str,
    observations: list[Json],
    specimens: list[Json],
    context: obs.Context,
    issued: str | None,
) -> Json:
    obr = group.obr
    where = ErrorLocation("OBR", obr.occurrence, 4)
    code = codeable(
        obr.rep(4), local=obs.lab_code_system(context.hospital), hospital=context.hospital
    )
    if code is None:
        raise Hl7MappingError(
            Hl7ErrorCode.MISSING_FIELD,
            "OBR-4 (universal service identifier) is empty",
            location=where,
        )
    report: Json = {"resourceType": "DiagnosticReport", "id": report_id}
    if context.updated:
        report["meta"] = {"lastUpdated": context.updated}
    mark = _mark(group, context)
    if mark:
        report["extension"] = [{"url": RECOGNITION_MARK_URL, "valueString": mark}]
    report["identifier"] = identity
    report["status"] = status
    if section := obr.get(24):  # OBR-24 diagnostic service section (table 0074)
        report["category"] = [{"coding": [{"system": _V2_0074, "code": section}]}]
    report["code"] = code
    report["subject"] = {"reference": context.patient_url}
    if context.effective:
        report["effectiveDateTime"] = context.effective
    if issued:
        report["issued"] = issued
    if specimens:
        report["specimen"] = [{"reference": f"urn:uuid:{s['id']}"} for s in specimens]
    if observations:
        report["result"] = [{"reference": f"urn:uuid:{o['id']}"} for o in observations]
    return report


def _report_status(obr: Segment, observation_statuses: list[str]) -> str:
    code = obr.get(25).upper()
    if not code:
        return derived_status(observation_statuses)
    if code in REPORT_STATUS:
        return REPORT_STATUS[code]
    detail = (
        "is a query answer (Y: no order, Z: no patient), not a result"
        if code in REPORT_STATUS_ERRORS
        else "is not in HL7 table 0123"
    )
    raise Hl7MappingError(
        Hl7ErrorCode.INVALID_VALUE,
        f"OBR-25 result status {code[:3]!r} {detail}",
        location=ErrorLocation("OBR", obr.occurrence, 25),
        hl7_error=103,
    )


def _mark(group: _Group, context: obs.Context) -> str | None:
    path = context.mark_path
    if path is None or path.segment == "OBX":
        return None
    seg = group.obr if path.segment == "OBR" else group.orc
    return (path.read(seg) or None) if seg is not None else None


def _uuid(hospital: str, *parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join((hospital, *parts))))


class _Times:
    """HL7 times as FHIR text; a malformed one is an error naming its field."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone

    def instant(self, value: str, where: ErrorLocation) -> str | None:
        return self._convert(value, where, fhir_instant)

    def datetime(self, value: str, where: ErrorLocation) -> str | None:
        return self._convert(value, where, fhir_datetime)

    def _convert(
        self, value: str, where: ErrorLocation, how: Callable[[str, tzinfo], str]
    ) -> str | None:
        if not value:
            return None
        try:
            return how(value, self.zone)
        except Hl7TimeError as exc:
            raise Hl7MappingError(
                Hl7ErrorCode.INVALID_VALUE, f"{where}: {exc}", location=where
            ) from None
