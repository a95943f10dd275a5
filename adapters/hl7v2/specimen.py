"""SPM -> FHIR Specimen, per the v2-to-FHIR SPM segment map.

The broker refuses to recognise results measured on an unusable specimen, so what the
lab says about it must reach the Bundle: SPM-21 reject reason (table 0490) and SPM-24
condition (table 0493). Also mapped: SPM-2 identifier (EIP: placer PGN, filler FGN),
SPM-4 type, SPM-14 note, SPM-17 collection time (a period when SPM-17.2 is valued),
SPM-18 receivedTime and SPM-20 availability (table 0136) as status.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.identity import ei_system
from adapters.hl7v2.segments import Rep, Segment, comp, sub
from adapters.hl7v2.tables import (
    SPECIMEN_AVAILABILITY,
    SPECIMEN_CONDITION,
    SPECIMEN_REJECT_REASON,
)
from adapters.hl7v2.timestamps import Hl7TimeError, fhir_datetime
from adapters.hl7v2.values import codeable, table_codeable, text_of

# The IG maps SPM-21 to a reject-reason extension it has not defined, so mrb names its own.
from mrb_wire.fhir import REJECT_REASON_URL

Json = dict[str, Any]

V2_0490 = "http://terminology.hl7.org/CodeSystem/v2-0490"
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class SpecimenContext:
    hospital: str
    patient_url: str
    updated: str | None  # meta.lastUpdated (MSH-7)
    zone: tzinfo


def keyed(segments: list[Segment]) -> Iterator[tuple[Segment, str]]:
    """Each SPM with a key stable across versions: its SPM-2 ids, else its place in the group."""
    seen: dict[str, int] = {}
    for position, seg in enumerate(segments, start=1):
        base = seg.text(2) or f"#{position}"
        seen[base] = seen.get(base, 0) + 1
        yield seg, f"{base}|{seen[base]}"


def specimen(seg: Segment, ctx: SpecimenContext, specimen_id: str) -> Json:
    """One Specimen; raises Hl7MappingError naming the SPM field at fault."""
    out: Json = {"resourceType": "Specimen", "id": specimen_id}
    if ctx.updated:
        out["meta"] = {"lastUpdated": ctx.updated}
    reasons = [
        c
        for c in (
            table_codeable(r, V2_0490, SPECIMEN_REJECT_REASON, hospital=ctx.hospital)
            for r in seg.reps(21)
        )
        if c
    ]
    if reasons:
        out["extension"] = [{"url": REJECT_REASON_URL, "valueCodeableConcept": c} for c in reasons]
    identifiers = [
        {"type": {"coding": [{"system": _V2_0203, "code": kind}]}, "system": system, "value": value}
        for kind, system, value in _ids(seg, ctx.hospital)
    ]
    if identifiers:
        out["identifier"] = identifiers
    # A reject reason outranks SPM-20: the lab took the specimen but could not use it.
    status = "unsatisfactory" if reasons else SPECIMEN_AVAILABILITY.get(seg.get(20).upper())
    if status:
        out["status"] = status
    if spm_type := codeable(seg.rep(4), local=None, hospital=ctx.hospital):
        out["type"] = spm_type
    out["subject"] = {"reference": ctx.patient_url}
    if received := _time(seg, 18, 1, ctx.zone):
        out["receivedTime"] = received
    if collection := _collection(seg, ctx.zone):
        out["collection"] = collection
    conditions = [
        c
        for c in (
            table_codeable(r, V2_0493, SPECIMEN_CONDITION, hospital=ctx.hospital)
            for r in seg.reps(24)
        )
        if c
    ]
    if conditions:
        out["condition"] = conditions
    notes = [t for t in (text_of([r]).strip() for r in seg.reps(14)) if t]
    if notes:
        out["note"] = [{"text": t} for t in notes]
    return out


def _ids(seg: Segment, hospital: str) -> list[tuple[str, str, str]]:
    """SPM-2 (EIP): the placer's id (PGN), then the filler's (FGN), as the IG's EIP maps."""
    rep = seg.rep(2)
    out = []
    for c, kind, name in ((1, "PGN", "placer-specimen"), (2, "FGN", "filler-specimen")):
        ei: Rep = [[part] for part in comp(rep, c)]  # EIP components are EIs in subcomponents
        if value := sub(ei, 1):
            out.append((kind, ei_system(ei, hospital, name), value))
    return out


def _collection(seg: Segment, zone: tzinfo) -> Json | None:
    """SPM-17 (DR): collectedPeriod when the end (SPM-17.2) is valued, else collectedDateTime."""
    start, end = _time(seg, 17, 1, zone), _time(seg, 17, 2, zone)
    if end:
        period = {"start": start} if start else {}
        return {"collectedPeriod": period | {"end": end}}
    return {"collectedDateTime": start} if start else None


def _time(seg: Segment, n: int, c: int, zone: tzinfo) -> str | None:
    value = seg.get(n, c)
    if not value:
        return None
    try:
        return fhir_datetime(value, zone)
    except Hl7TimeError as exc:
        where = ErrorLocation("SPM", seg.occurrence, n, c if c > 1 else None)
        raise Hl7MappingError(
            Hl7ErrorCode.INVALID_VALUE, f"{where}: {exc}", location=where
        ) from None
