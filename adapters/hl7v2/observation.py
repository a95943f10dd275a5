"""OBX (+ its NTE) -> FHIR Observation, per the v2-to-FHIR OBX segment map.

OBX-2 picks value[x]; OBX-3 the code (LN -> LOINC, anything local -> the hospital's
lab-code system that schemas/catalog/mappings/<H>.yaml maps); OBX-6 the unit; OBX-7
referenceRange; OBX-8 interpretation; OBX-11 status (table 0085) and, for X and N, a
dataAbsentReason instead of any value; OBX-14 the time. An empty or null ("") OBX-5
gives no value[x] at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.segments import HL7_NULL, FieldPath, Rep, Segment, sub
from adapters.hl7v2.tables import (
    OBSERVATION_ABSENT_REASON,
    OBSERVATION_STATUS,
    REPORT_TO_OBSERVATION_STATUS,
)
from adapters.hl7v2.timestamps import Hl7TimeError, fhir_datetime
from adapters.hl7v2.values import (
    BadValue,
    codeable,
    guessed_value,
    interpretations,
    numeric_value,
    reference_range,
    structured_numeric,
    text_of,
)
from mrb_wire.fhir import RECOGNITION_MARK_URL

Json = dict[str, Any]
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_ALTERNATE_CODES = "http://hl7.org/fhir/StructureDefinition/alternate-codes"
_V2_0085 = "http://terminology.hl7.org/CodeSystem/v2-0085"
_ABSENT_DISPLAY = {"not-asked": "Not Asked", "not-performed": "Not Performed"}

_TEXT_TYPES = frozenset(
    {"ST", "TX", "FT", "TN", "AD", "CP", "XAD", "XPN", "XCN", "XON", "NA", "MA"}
)
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF", "IS", "ID"})
_TIME_TYPES = frozenset({"DT", "TS", "DTM"})


def lab_code_system(hospital: str) -> str:
    """Local LIS codes (OBX-3, OBR-4): the system the catalog's mappings key on."""
    return f"urn:mrb:hospital:{hospital}:lab-code"


@dataclass
class ObxEntry:
    segment: Segment
    notes: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    hospital: str
    patient_url: str
    updated: str | None  # meta.lastUpdated (MSH-7)
    effective: str | None  # the report's collection time (OBR-7, else SPM-17)
    zone: tzinfo
    mark_path: FieldPath | None
    specimen_url: str | None = None  # Observation.specimen: the group's only SPM


def keyed(entries: list[ObxEntry]) -> Iterator[tuple[ObxEntry, str]]:
    """Each OBX with a key stable across versions: its code and sub-id, not its position."""
    seen: dict[str, int] = {}
    for entry in entries:
        seg = entry.segment
        base = f"{sub(seg.rep(3), 3)}|{sub(seg.rep(3), 1)}|{seg.get(4)}"
        seen[base] = seen.get(base, 0) + 1
        yield entry, f"{base}|{seen[base]}"


def observation(entry: ObxEntry, ctx: Context, obs_id: str) -> Json:
    """One Observation; raises Hl7MappingError naming the OBX field at fault."""
    seg = entry.segment
    where = ErrorLocation("OBX", seg.occurrence, 3)
    code = codeable(seg.rep(3), local=lab_code_system(ctx.hospital), hospital=ctx.hospital)
    if code is None:
        raise Hl7MappingError(
            Hl7ErrorCode.MISSING_FIELD, f"{where} (observation identifier) is empty", location=where
        )
    out: Json = {"resourceType": "Observation", "id": obs_id}
    if ctx.updated:
        out["meta"] = {"lastUpdated": ctx.updated}
    path = ctx.mark_path
    if path is not None and path.segment == "OBX" and (mark := path.read(seg)):
        out["extension"] = [{"url": RECOGNITION_MARK_URL, "valueString": mark}]
    out["status"] = _status(seg)
    result_status = seg.get(11).upper()
    if result_status == "X":  # the IG's OBX map keeps X beside "cancelled", which N shares
        out["_status"] = {
            "extension": [
                {
                    "url": _ALTERNATE_CODES,
                    "valueCodeableConcept": {"coding": [{"system": _V2_0085, "code": "X"}]},
                }
            ]
        }
    out["code"] = code
    out["subject"] = {"reference": ctx.patient_url}
    effective = _time(seg, 14, ctx.zone) or ctx.effective
    if effective:
        out["effectiveDateTime"] = effective
    if absent := OBSERVATION_ABSENT_REASON.get(result_status):
        # X/N say there is no result, so whatever OBX-5 holds is an explanation, not a
        # value of type OBX-2: it becomes the reason's text (obs-6: never both).
        reason: Json = {
            "coding": [
                {"system": DATA_ABSENT_REASON, "code": absent, "display": _ABSENT_DISPLAY[absent]}
            ]
        }
        if said := text_of(_present(seg.reps(5)), "; ").strip():
            reason["text"] = said
        out["dataAbsentReason"] = reason
    else:
        out.update(_value(seg, ctx))
    flags = interpretations(seg.reps(8))
    if flags:
        out["interpretation"] = flags
    notes = [t for t in (text_of(n.reps(3)) for n in entry.notes) if t.strip()]
    if notes:
        out["note"] = [{"text": t.strip()} for t in notes]
    if ctx.specimen_url:
        out["specimen"] = {"reference": ctx.specimen_url}
    if rng := reference_range(seg.get(7), seg.rep(6)):
        out["referenceRange"] = [rng]
    return out


def _present(reps: list[Rep]) -> list[Rep]:
    """Repetitions holding something other than blanks or the HL7 null ("")."""
    return [r for r in reps if any(s.strip() not in ("", HL7_NULL) for c in r for s in c)]


def _string(text: str) -> Json:
    return {"valueString": text} if text.strip() else {}


def _status(seg: Segment) -> str:
    code = seg.get(11).upper()
    if not code:
        return "unknown"  # oru replaces it with the report's status
    if code not in OBSERVATION_STATUS:
        where = ErrorLocation("OBX", seg.occurrence, 11)
        raise Hl7MappingError(
            Hl7ErrorCode.INVALID_VALUE,
            f"{where} result status {code[:3]!r} is not in HL7 table 0085",
            location=where,
            hl7_error=103,
        )
    return OBSERVATION_STATUS[code]


def status_from_report(report_status: str) -> str:
    return REPORT_TO_OBSERVATION_STATUS.get(report_status, "unknown")


def _time(seg: Segment, n: int, zone: tzinfo) -> str | None:
    value = seg.get(n)
    if not value:
        return None
    try:
        return fhir_datetime(value, zone)
    except Hl7TimeError as exc:
        where = ErrorLocation("OBX", seg.occurrence, n)
        raise Hl7MappingError(
            Hl7ErrorCode.INVALID_VALUE, f"{where}: {exc}", location=where
        ) from None


def _value(seg: Segment, ctx: Context) -> Json:
    """OBX-5 by OBX-2; repetitions of a non-text type are kept as text, never dropped."""
    reps = _present(seg.reps(5))
    if not reps:
        return {}  # empty, blank or "" (HL7 null): no value[x], never an empty string
    value_type = seg.get(2).upper()
    where = ErrorLocation("OBX", seg.occurrence, 5)
    unit = seg.rep(6)
    try:
        if value_type in _TEXT_TYPES:
            return _string(text_of(reps))
        if value_type == "ED":
            return {}  # encapsulated documents (PDF, images) are not results to index
        if value_type == "RP":
            return _string("; ".join(t for t in (sub(r, 1) for r in reps) if t))
        if len(reps) > 1:
            return {"valueString": text_of(reps, "; ")}
        if value_type == "NM":
            return numeric_value(sub(reps[0], 1), unit)
        if value_type == "SN":
            return structured_numeric(reps[0], unit)
        if value_type in _CODED_TYPES:
            concept = codeable(reps[0], local=None, hospital=ctx.hospital)
            return {"valueCodeableConcept": concept} if concept else {}
        if value_type in _TIME_TYPES:
            return {"valueDateTime": fhir_datetime(sub(reps[0], 1), ctx.zone)}
        return guessed_value(reps, unit)  # empty or non-standard OBX-2 (e.g. "FN")
    except (BadValue, Hl7TimeError) as exc:
        raise Hl7MappingError(
            Hl7ErrorCode.INVALID_VALUE,
            f"{where} {exc} although OBX-2 says {value_type or 'nothing'}",
            location=where,
        ) from None
