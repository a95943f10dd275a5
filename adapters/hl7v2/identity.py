"""A report's identity: DiagnosticReport.identifier from OBR-3/ORC-3 (filler), OBR-2/ORC-2
(placer), else MSH-10. The first identifier is the business id the broker indexes under
(DESIGN.md: a result's identity is the hospital plus OBR-3), so it must not change
between the versions of one result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.msh import MessageHeader
from adapters.hl7v2.segments import Rep, Segment, sub

Json = dict[str, Any]
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9]\d*))+")


@dataclass(frozen=True)
class OrderSegments:
    obr: Segment
    orc: Segment | None


def report_identifiers(
    group: OrderSegments,
    header: MessageHeader,
    hospital: str,
    index: int,
    count: int,
    used: set[tuple[str, str]],
) -> list[Json]:
    """DiagnosticReport.identifier: filler (OBR-3, else ORC-3) first, then placer."""
    found: list[tuple[str, Rep]] = []
    for kind, field_no in (("FILL", 3), ("PLAC", 2)):
        for seg in (group.obr, group.orc):
            if seg is not None and sub(rep := seg.rep(field_no), 1):
                found.append((kind, rep))
                break
    out: list[Json] = [
        {
            "type": {"coding": [{"system": _V2_0203, "code": kind}]},
            "system": ei_system(
                rep, hospital, "filler-order" if kind == "FILL" else "placer-order"
            ),
            "value": sub(rep, 1),
        }
        for kind, rep in found
    ]
    if not out:
        control = header.control_id
        if not control:
            raise Hl7MappingError(
                Hl7ErrorCode.MISSING_FIELD,
                "OBR-3 (filler order number), OBR-2 and MSH-10 are all empty: the result "
                "has no identity for later corrections",
                location=ErrorLocation("OBR", group.obr.occurrence, 3),
            )
        value = control if count == 1 else f"{control}/{index}"
        out = [{"system": f"urn:mrb:hospital:{hospital}:hl7-control-id", "value": value}]
    first = out[0]
    key = (str(first["system"]), str(first["value"]))
    obr = group.obr
    # A child order (OBR-29 parent: reflex tests, susceptibilities) or a filler number
    # repeated in one message: the ordered service (OBR-4) tells the reports apart.
    if obr.get(29) or key in used:
        key = (key[0], f"{key[1]}/{obr.get(4)}")
    if key in used:
        key = (key[0], f"{key[1]}/{index}")
    used.add(key)
    first["value"] = key[1]
    return out


def ei_system(rep: Rep, hospital: str, kind: str) -> str:
    """EI: entity ^ namespace ^ universal id ^ type. An ISO OID names its issuer globally."""
    namespace, uid, uid_type = sub(rep, 2), sub(rep, 3), sub(rep, 4).upper()
    if uid and uid_type == "ISO" and _OID.fullmatch(uid):
        return f"urn:oid:{uid}"
    base = f"urn:mrb:hospital:{hospital}:{kind}"
    return f"{base}:{quote(namespace, safe='')}" if namespace else base
