"""PID -> FHIR Patient: identifiers (PID-3 CX repetitions), name, birth date, sex.

Identifier systems decide who links to whom at the broker: only the national resident
ID (居民身份证, urn:oid:2.16.156.10011.1.3) links across hospitals; everything else is
scoped to the hospital, under urn:mrb:hospital:<H>:pid[:<authority or type>].
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.segments import Rep, Segment, comp, sub
from adapters.hl7v2.tables import GENDER, NAME_USE
from adapters.hl7v2.timestamps import Hl7TimeError, fhir_date
from mrb_wire import resident_id
from mrb_wire.fhir import RESIDENT_ID_SYSTEM

Json = dict[str, Any]

_RESIDENT_ID_OID = resident_id.OID
_RESIDENT_ID_AUTHORITIES = frozenset({"身份证", "居民身份证", "SFZ", "SFZH", _RESIDENT_ID_OID})
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# Well-known assigning authorities (CX.4.1) with a FHIR identifier system.
_AUTHORITIES = {
    "SSA": "http://hl7.org/fhir/sid/us-ssn",
    "USSSA": "http://hl7.org/fhir/sid/us-ssn",
}


def valid_resident_id(value: str) -> bool:
    """GB 11643: 17 digits then an ISO 7064 MOD 11-2 check character."""
    return resident_id.canonical(value) is not None


@dataclass(frozen=True)
class PatientIdentifier:
    system: str
    value: str
    type_code: str | None
    declared_national: bool  # said to be a resident ID by type or authority

    def as_fhir(self) -> Json:
        out: Json = {}
        if self.type_code:
            out["type"] = {"coding": [{"system": _V2_0203, "code": self.type_code}]}
        out["system"] = self.system
        out["value"] = self.value
        return out


def cx_system(rep: Rep, hospital: str) -> tuple[str, bool]:
    """The identifier system for one CX, and whether it claims to be a resident ID."""
    id_type = sub(rep, 5).upper()
    namespace, uid, uid_type = sub(rep, 4, 1), sub(rep, 4, 2), sub(rep, 4, 3).upper()
    if (
        id_type == "NNCHN"
        or namespace.upper() in _RESIDENT_ID_AUTHORITIES
        or uid == _RESIDENT_ID_OID
    ):
        return RESIDENT_ID_SYSTEM, True
    if id_type == "NI" and valid_resident_id(sub(rep, 1)):
        return RESIDENT_ID_SYSTEM, False  # "national identifier" in a Chinese hospital
    if uid and uid_type == "ISO":
        return f"urn:oid:{uid}", False
    if uid and uid_type in ("UUID", "GUID"):
        return f"urn:uuid:{uid.lower()}", False
    if uid and uid_type == "URI":
        return uid, False
    if namespace.upper() in _AUTHORITIES:
        return _AUTHORITIES[namespace.upper()], False
    qualifier = namespace or id_type
    base = f"urn:mrb:hospital:{hospital}:pid"
    return (f"{base}:{quote(qualifier, safe='')}" if qualifier else base), False


def patient_identifiers(pid: Segment, hospital: str) -> list[PatientIdentifier]:
    """PID-3 (else PID-2, then PID-4, for v2.2-era senders), plus PID-19 if a resident ID."""
    found: list[PatientIdentifier] = []
    for field in (3, 2, 4):
        for rep in pid.reps(field):
            value = " ".join(sub(rep, 1).split())
            if not value:
                continue
            system, declared = cx_system(rep, hospital)
            if system == RESIDENT_ID_SYSTEM:
                value = value.upper()
            ident = PatientIdentifier(system, value, sub(rep, 5) or None, declared)
            if ident not in found:
                found.append(ident)
        if found:
            break
    ssn = pid.get(19)  # many Chinese HIS put the resident ID in the "SSN" field
    if valid_resident_id(ssn):
        extra = PatientIdentifier(
            RESIDENT_ID_SYSTEM, resident_id.canonical(ssn) or ssn, None, False
        )
        if all((i.system, i.value) != (extra.system, extra.value) for i in found):
            found.append(extra)
    usable = [i for i in found if not i.declared_national or valid_resident_id(i.value)]
    if found and not usable:
        raise Hl7MappingError(
            Hl7ErrorCode.INVALID_VALUE,
            "PID-3 carries only resident ID numbers that fail the GB 11643 check digit",
            location=ErrorLocation("PID", pid.occurrence, 3),
        )
    if not usable:
        raise Hl7MappingError(
            Hl7ErrorCode.NO_PATIENT,
            "PID-3 (patient identifier list) is empty: the result cannot be linked to a patient",
            location=ErrorLocation("PID", pid.occurrence, 3),
        )
    return usable


def patient_resource(pid: Segment, patient_id: str, identifiers: list[PatientIdentifier]) -> Json:
    """Patient with identifiers, PID-5 names, PID-7 birth date and PID-8 sex."""
    patient: Json = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [i.as_fhir() for i in identifiers],
    }
    names = [n for n in (_name(rep) for rep in pid.reps(5)) if n]
    if names:
        patient["name"] = names
    gender = GENDER.get(pid.get(8).upper())
    if gender:
        patient["gender"] = gender
    # A malformed birth date is dropped: it never decides recognition.
    with contextlib.suppress(Hl7TimeError):
        if born := pid.get(7):
            patient["birthDate"] = fhir_date(born)
    return patient


def _name(rep: Rep) -> Json | None:
    """XPN (PN in v2.2/2.3): family ^ given ^ middle ^ suffix ^ prefix ^ degree ^ type."""
    name: Json = {}
    use = NAME_USE.get(sub(rep, 7).upper())
    if use:
        name["use"] = use
    family = comp(rep, 1)[0].strip() if comp(rep, 1) else ""
    if family:
        name["family"] = family
    given = [g for g in (sub(rep, 2), sub(rep, 3)) if g]
    if given:
        name["given"] = given
    if prefix := sub(rep, 5):
        name["prefix"] = [prefix]
    if suffix := sub(rep, 4):
        name["suffix"] = [suffix]
    return name if ("family" in name or "given" in name) else None
