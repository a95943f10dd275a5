"""The FHIR Patient of a study: identifiers with the systems the broker knows.

Patient ID (0010,0020) is the hospital's own identifier, namespaced by its Issuer of
Patient ID (0010,0021): `urn:mrb:hospital:<H>:pid:<issuer or local>`, which the broker
links only within that hospital. A Chinese resident ID number (居民身份证号, GB 11643)
links across hospitals as `urn:oid:2.16.156.10011.1.3`; it is taken from Patient ID or
Other Patient IDs Sequence (0010,1002) when the issuer says so, and only when its check
digit is right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from adapters.dicom.headers import InstanceHeaders, PatientIdHeader
from mrb_wire import resident_id
from mrb_wire.fhir import RESIDENT_ID_SYSTEM

RESIDENT_ID_OID = resident_id.OID
# Issuer of Patient ID values that mean "this is the resident ID number" (compared
# lower-cased, without spaces); the broker's own aliases are among them.
NATIONAL_ID_ISSUERS = frozenset(
    {
        RESIDENT_ID_OID,
        RESIDENT_ID_SYSTEM,
        "http://www.nhc.gov.cn/fhir/sid/resident-id",
        "urn:mrb:sid:resident-id",
        "sfz",
        "sfzh",
        "身份证",
        "身份证号",
        "居民身份证",
        "居民身份证号",
        "residentid",
        "resident-id",
        "nationalid",
        "national-id",
        "idcard",
        "cn-resident-id",
    }
)
_GENDER = {"M": "male", "F": "female", "O": "other"}


def valid_resident_id(value: str) -> str | None:
    """The ID in ASCII, upper-cased, when it is 17 digits plus a right check character."""
    return resident_id.canonical(value)


def pid_system(hospital: str, issuer: str | None) -> str:
    """The broker's hospital-scoped system for a Patient ID with this issuer."""
    return f"urn:mrb:hospital:{hospital}:pid:{quote(issuer or 'local', safe='-._~')}"


def is_national(ident: PatientIdHeader, extra_issuers: Iterable[str] = ()) -> bool:
    """Whether the issuer (or its universal entity ID) names the resident ID number."""
    issuers = NATIONAL_ID_ISSUERS | {i.strip().lower().replace(" ", "") for i in extra_issuers}
    if ident.universal_id and ident.universal_id.strip() in (RESIDENT_ID_OID, RESIDENT_ID_SYSTEM):
        return True
    return (ident.issuer or "").strip().lower().replace(" ", "") in issuers


@dataclass(frozen=True)
class PatientIdentifiers:
    identifiers: tuple[dict[str, str], ...]  # FHIR Identifier elements
    warnings: tuple[str, ...]  # say what was left out and why, never the value


def patient_identifiers(
    headers: InstanceHeaders, hospital: str, extra_issuers: Iterable[str] = ()
) -> PatientIdentifiers:
    """Patient ID first, then the resident ID and issuer-qualified Other Patient IDs.

    Other Patient IDs without an issuer are left out: their namespace is unknown, and
    putting them beside the Patient ID could link two different people.
    """
    out: list[dict[str, str]] = []
    warnings: list[str] = []
    for n, ident in enumerate((headers.patient, *headers.other_patient_ids)):
        where = "Patient ID" if n == 0 else f"Other Patient ID #{n}"
        if is_national(ident, extra_issuers):
            resident = valid_resident_id(ident.value)
            if resident is not None:
                _append(out, {"system": RESIDENT_ID_SYSTEM, "value": resident})
                continue
            warnings.append(f"{where} is marked as a resident ID but fails GB 11643")
            if n > 0:
                continue
        elif n > 0 and not ident.issuer:
            continue
        _append(out, {"system": pid_system(hospital, ident.issuer), "value": ident.value})
    return PatientIdentifiers(tuple(out), tuple(warnings))


def _append(out: list[dict[str, str]], ident: dict[str, str]) -> None:
    if ident not in out:
        out.append(ident)


def patient_resource(
    patient_id: str, headers: InstanceHeaders, identifiers: tuple[dict[str, str], ...]
) -> dict[str, object]:
    """The FHIR R4 Patient: identifiers, name (PN groups), gender, birth date."""
    res: dict[str, object] = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": list(identifiers),
    }
    names = [
        n
        for n in (
            _human_name(headers.patient_name),
            _human_name(headers.patient_name_ideographic),
        )
        if n
    ]
    if names:
        res["name"] = names
    if headers.sex and headers.sex.upper() in _GENDER:
        res["gender"] = _GENDER[headers.sex.upper()]
    if headers.birth_date is not None:
        res["birthDate"] = headers.birth_date.isoformat()
    return res


def _human_name(pn: str | None) -> dict[str, object] | None:
    """A PN component group family^given^middle^prefix^suffix as a HumanName."""
    if not pn:
        return None
    parts = [p.strip() for p in pn.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    sep = "" if any(ch >= "\u2e80" for ch in pn) else " "  # 张三, not 张 三
    name: dict[str, object] = {"text": sep.join(p for p in parts[:5] if p)}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [g for g in (given, middle) if g]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name if len(name) > 1 or name["text"] else None
