"""Patient identifiers: normalisation, national-ID validation and link scope.

Identifiers are only ever stored as keyed pseudonyms; this module decides *what* is
pseudonymised: the canonical system, the value and, for hospital-local identifiers,
the hospital that issued it (an MRN "12345" at H001 is not the same person as
"12345" at H002).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from mrb_wire import resident_id

# 中华人民共和国居民身份证号码 (GB 11643), OID as used by China's EHR standards (WS 363).
RESIDENT_ID_SYSTEM = resident_id.SYSTEM

# Other spellings of the same systems seen from hospital interfaces; extendable per site.
DEFAULT_SYSTEM_ALIASES: Mapping[str, str] = {
    RESIDENT_ID_SYSTEM: RESIDENT_ID_SYSTEM,
    "2.16.156.10011.1.3": RESIDENT_ID_SYSTEM,
    "http://www.nhc.gov.cn/fhir/sid/resident-id": RESIDENT_ID_SYSTEM,
    "urn:mrb:sid:resident-id": RESIDENT_ID_SYSTEM,
    "sfzh": RESIDENT_ID_SYSTEM,  # 身份证号 column name used by many HIS exports
}

NATIONAL_SYSTEMS = frozenset({RESIDENT_ID_SYSTEM})

# Not a real identifier system: the sending hospital's own FHIR Patient.id.
FHIR_PATIENT_ID_SYSTEM = "urn:mrb:fhir:patient-id"


class IdentifierScope(StrEnum):
    NATIONAL = "national"  # links across hospitals
    HOSPITAL = "hospital"  # links only within the issuing hospital


class InvalidIdentifier(ValueError):
    """An identifier that claims a known system but breaks its rules."""


@dataclass(frozen=True)
class PatientIdentifier:
    """A normalised identifier: the text that gets pseudonymised is `link_key`."""

    system: str
    value: str
    scope: IdentifierScope
    hospital: str | None  # set for hospital-scoped identifiers

    @property
    def national_system(self) -> str | None:
        """The system, for a national identifier: a person holds one number of each."""
        return self.system if self.scope is IdentifierScope.NATIONAL else None

    @property
    def link_key(self) -> str:
        if self.scope is IdentifierScope.NATIONAL:
            return f"national|{self.system}|{self.value}"
        return f"hospital|{self.hospital}|{self.system}|{self.value}"


def resident_id_check_digit(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character for 17 digits (GB 11643)."""
    return resident_id.check_character(first17)


def nfkc(value: str) -> str:
    """Unicode NFKC: full-width "１１０１" is "1101", so one person keeps one pseudonym
    however the sending system typed the number."""
    return unicodedata.normalize("NFKC", value)


def validate_resident_id(value: str) -> str:
    """Return the resident ID as ASCII, upper-cased, or raise InvalidIdentifier saying why."""
    v = nfkc(value).strip().upper()
    if len(v) != 18:
        raise InvalidIdentifier(f"resident ID must have 18 characters, got {len(v)}")
    if not resident_id.has_shape(v):
        raise InvalidIdentifier("resident ID must be 17 digits 0-9 then a digit or X")
    if resident_id_check_digit(v[:17]) != v[17]:
        raise InvalidIdentifier("resident ID check digit does not match (GB 11643)")
    return v


def normalise(
    system: str | None,
    value: str | None,
    *,
    hospital: str,
    aliases: Mapping[str, str] = DEFAULT_SYSTEM_ALIASES,
) -> PatientIdentifier | None:
    """Normalise one identifier as published by `hospital`; None when it has no value.

    An unknown system (or none) is scoped to the hospital: we never link people across
    hospitals on identifiers whose meaning we cannot vouch for.
    """
    if value is None:
        return None
    value = nfkc(value)
    if not value.strip():
        return None
    raw_system = nfkc(system or "").strip()
    canonical = aliases.get(raw_system, aliases.get(raw_system.lower(), raw_system))
    if canonical in NATIONAL_SYSTEMS:
        return PatientIdentifier(
            canonical, validate_resident_id(value), IdentifierScope.NATIONAL, None
        )
    return PatientIdentifier(canonical, value.strip(), IdentifierScope.HOSPITAL, hospital)


def patient_resource_key(resource_id: str, *, hospital: str) -> PatientIdentifier:
    """The hospital-scoped key of a FHIR Patient.id (or absolute Patient URL)."""
    return PatientIdentifier(
        FHIR_PATIENT_ID_SYSTEM, resource_id, IdentifierScope.HOSPITAL, hospital
    )
