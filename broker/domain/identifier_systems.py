"""Identifier systems as data: per-system validation, link scope and demographic consistency.

`schemas/identity/identifier-systems.yaml` lists the systems hospitals send (resident ID,
residence permits, permanent-residence cards, travel permits, health cards, MRNs ...);
`broker.reference.identifier_systems` loads it into an `IdentifierRegistry`. The registry
decides what gets pseudonymised (`PatientIdentifier.link_key`, as in `identifiers`) and
whether a record may be linked across hospitals without a person looking at it.

Two rules keep false links out: only a trusted national system links deterministically,
and only when the record's own birth date and sex agree with what the number encodes
(a newborn registered under a parent's number never links as that parent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from types import MappingProxyType

from broker.domain.identifiers import (
    IdentifierScope,
    InvalidIdentifier,
    PatientIdentifier,
    nfkc,
)
from mrb_wire import resident_id

_DIGITS15 = re.compile(r"[0-9]{15}", re.ASCII)
# Address codes of Hong Kong, Macau and Taiwan residents' 公民身份号码 (residence permits).
HMT_AREA_CODES = frozenset({"810000", "820000", "830000"})
_FPRC_LEGACY = re.compile(r"[A-Z]{3}[0-9]{12}", re.ASCII)
_HKMO_PERMIT = re.compile(r"([HM][0-9]{8})([0-9]{2})?", re.ASCII)
_TW_PERMIT = re.compile(r"([0-9]{8})([0-9]{2})?(\([0-9A-Z]{1,2}\))?", re.ASCII)
_WHITESPACE = re.compile(r"\s")
_TOKEN_MAX = 128


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"


@dataclass(frozen=True)
class EncodedDemographics:
    """What an identifier says about its holder. `birth_date` is None when the digits
    are not a real date (a resident ID with a valid check character can still say 19990231)."""

    birth_date: date | None
    birth_digits: str
    sex: Sex


# ---------------------------------------------------------------- validators (one per format)


def _upper(value: str) -> str:
    return nfkc(value).strip().upper()


def _date8(digits: str) -> date | None:
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _check_gb11643(v: str, what: str) -> None:
    if len(v) != 18:
        raise InvalidIdentifier(f"{what} must have 18 characters, got {len(v)}")
    if not resident_id.has_shape(v):
        raise InvalidIdentifier(f"{what} must be 17 digits 0-9 then a digit or X")
    if resident_id.check_character(v[:17]) != v[17]:
        raise InvalidIdentifier(f"{what} check digit does not match (GB 11643, ISO 7064 MOD 11-2)")


def legacy_to_18(v15: str) -> str:
    """The 18-digit form of a legacy 15-digit resident ID: "19" before the 2-digit birth
    year, then the MOD 11-2 check character (15-digit numbers were issued before 2000)."""
    first17 = v15[:6] + "19" + v15[6:]
    return first17 + resident_id.check_character(first17)


def validate_gb11643(value: str) -> str:
    """Resident ID (GB 11643): 18 characters, or a legacy 15-digit number converted to 18.

    The 18-digit form is checked exactly as `identifiers.validate_resident_id` does (shape
    and check character only); an impossible birth date is left to `consistency`, which
    refuses to auto-link it. A legacy number has no check character, so its date is checked.
    """
    v = _upper(value)
    if len(v) == 15:
        if not _DIGITS15.fullmatch(v):
            raise InvalidIdentifier("legacy 15-digit resident ID must be 15 digits 0-9")
        if _date8("19" + v[6:12]) is None:
            raise InvalidIdentifier(f"legacy resident ID has an impossible birth date 19{v[6:12]}")
        return legacy_to_18(v)
    if len(v) != 18:
        raise InvalidIdentifier(
            f"resident ID must have 18 characters (or 15 for a legacy number), got {len(v)}"
        )
    _check_gb11643(v, "resident ID")
    return v


def validate_hmt_residence_permit(value: str) -> str:
    """港澳台居民居住证: a GB 11643 number whose address code is 810000/820000/830000."""
    v = _upper(value)
    _check_gb11643(v, "residence permit number")
    if v[:6] not in HMT_AREA_CODES:
        raise InvalidIdentifier(
            f"residence permit number has unknown area code {v[:6]} (expected 810000, "
            "820000 or 830000)"
        )
    if _date8(v[6:14]) is None:
        raise InvalidIdentifier(f"residence permit number has an impossible birth date {v[6:14]}")
    return v


def validate_fprc(value: str) -> str:
    """外国人永久居留身份证: 18 characters starting with 9 (2023 card, GB 11643 layout and
    check), or the earlier 15 characters (3 Latin letters + 12 digits)."""
    v = _upper(value)
    if len(v) == 15:
        if not _FPRC_LEGACY.fullmatch(v):
            raise InvalidIdentifier(
                "15-character permanent-residence ID must be 3 letters A-Z then 12 digits"
            )
        return v
    if len(v) != 18:
        raise InvalidIdentifier(
            f"permanent-residence ID must have 18 characters (or 15 for an earlier card), "
            f"got {len(v)}"
        )
    if not resident_id.has_shape(v):
        raise InvalidIdentifier("permanent-residence ID must be 17 digits 0-9 then a digit or X")
    if v[0] != "9":
        raise InvalidIdentifier(f"permanent-residence ID must start with 9, got prefix {v[0]}")
    _check_gb11643(v, "permanent-residence ID")
    if _date8(v[6:14]) is None:
        raise InvalidIdentifier(f"permanent-residence ID has an impossible birth date {v[6:14]}")
    return v


def validate_hkmo_travel_permit(value: str) -> str:
    """港澳居民来往内地通行证: H/M + 8-digit lifetime number (+ 2-digit issue count).

    Returns the first 9 characters: they stay the same when the permit is re-issued, so
    the old and the new permit give one link key."""
    v = _upper(value)
    m = _HKMO_PERMIT.fullmatch(v)
    if m is None:
        if v[:1] not in ("H", "M"):
            raise InvalidIdentifier("travel permit number must start with H or M")
        raise InvalidIdentifier(
            f"travel permit number must be H or M then 8 or 10 digits, got {len(v)} characters"
        )
    return m.group(1)


def validate_tw_travel_permit(value: str) -> str:
    """台湾居民来往大陆通行证: the 8-digit lifetime number; a 2-digit issue count and a
    bracketed issuing-office code on older permits are dropped."""
    v = _upper(value)
    m = _TW_PERMIT.fullmatch(v)
    if m is None:
        raise InvalidIdentifier(
            "Taiwan travel permit number must be 8 digits (optionally + 2-digit issue count)"
        )
    return m.group(1)


def validate_token(value: str) -> str:
    """An opaque card or account number: no spaces inside, at most 128 characters."""
    v = nfkc(value).strip()
    if _WHITESPACE.search(v):
        raise InvalidIdentifier("card number must not contain spaces")
    if len(v) > _TOKEN_MAX:
        raise InvalidIdentifier(f"card number is longer than {_TOKEN_MAX} characters")
    if not v.isprintable():
        raise InvalidIdentifier("card number contains control characters")
    return v


def validate_text(value: str) -> str:
    """A hospital's own number: kept as sent (NFKC, trimmed), as for unknown systems."""
    return nfkc(value).strip()


def _gb11643_demographics(v: str) -> EncodedDemographics | None:
    # Digits 7-14 the birth date, digit 17 the sex: odd male, even female (GB 11643 §4).
    if len(v) != 18:
        return None
    return EncodedDemographics(_date8(v[6:14]), v[6:14], Sex.MALE if int(v[16]) % 2 else Sex.FEMALE)


@dataclass(frozen=True)
class Format:
    """How one kind of number is validated and what it encodes."""

    name: str
    validate: Callable[[str], str]
    demographics: Callable[[str], EncodedDemographics | None] | None = None


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        f.name: f
        for f in (
            Format("gb11643", validate_gb11643, _gb11643_demographics),
            Format("gb11643-hmt", validate_hmt_residence_permit, _gb11643_demographics),
            Format("fprc", validate_fprc, _gb11643_demographics),
            Format("hkmo-travel-permit", validate_hkmo_travel_permit),
            Format("tw-travel-permit", validate_tw_travel_permit),
            Format("token", validate_token),
            Format("text", validate_text),
        )
    }
)


# ---------------------------------------------------------------------------- consistency


class ConsistencyStatus(StrEnum):
    CONSISTENT = "consistent"  # the record's birth date and sex agree with the number
    UNVERIFIABLE = "unverifiable"  # nothing to compare (missing data, or nothing encoded)
    INCONSISTENT = "inconsistent"  # the number belongs to someone else, or is wrong


class ConsistencyReason(StrEnum):
    AGREES = "AGREES"
    NO_DEMOGRAPHICS_ENCODED = "NO_DEMOGRAPHICS_ENCODED"
    BIRTH_DATE_MISSING = "BIRTH_DATE_MISSING"
    SEX_MISSING = "SEX_MISSING"
    DEMOGRAPHICS_MISSING = "DEMOGRAPHICS_MISSING"
    ID_BIRTH_DATE_INVALID = "ID_BIRTH_DATE_INVALID"
    NEWBORN_UNDER_OTHER_ID = "NEWBORN_UNDER_OTHER_ID"
    BIRTH_DATE_MISMATCH = "BIRTH_DATE_MISMATCH"
    SEX_MISMATCH = "SEX_MISMATCH"


@dataclass(frozen=True)
class Consistency:
    """Whether a record's demographics agree with its identifier; `message` says why."""

    status: ConsistencyStatus
    reason: ConsistencyReason
    message: str

    @property
    def consistent(self) -> bool:
        return self.status is ConsistencyStatus.CONSISTENT


# FHIR AdministrativeGender, HL7 v2 table 0001, GB/T 2261.1 (1 男性, 2 女性) and the words.
_SEX_CODES: Mapping[str, Sex] = MappingProxyType(
    {
        "male": Sex.MALE,
        "m": Sex.MALE,
        "1": Sex.MALE,
        "男": Sex.MALE,
        "男性": Sex.MALE,
        "female": Sex.FEMALE,
        "f": Sex.FEMALE,
        "2": Sex.FEMALE,
        "女": Sex.FEMALE,
        "女性": Sex.FEMALE,
    }
)


def record_sex(sex: str | None) -> Sex | None:
    """Male or female from a FHIR/HL7/GB code; None for other, unknown or absent."""
    return _SEX_CODES.get(nfkc(sex).strip().lower()) if sex else None


def _one_year_before(today: date) -> date:
    try:
        return today.replace(year=today.year - 1)
    except ValueError:  # 29 February
        return today.replace(year=today.year - 1, day=28)


def check_consistency(
    encoded: EncodedDemographics | None,
    *,
    birth_date: date | None,
    sex: str | None,
    today: date,
) -> Consistency:
    """Compare what an identifier encodes with the record's birth date and sex."""
    status, reason = ConsistencyStatus, ConsistencyReason
    if encoded is None:
        return Consistency(
            status.UNVERIFIABLE,
            reason.NO_DEMOGRAPHICS_ENCODED,
            "the identifier encodes no birth date or sex",
        )
    if encoded.birth_date is None or encoded.birth_date > today:
        return Consistency(
            status.INCONSISTENT,
            reason.ID_BIRTH_DATE_INVALID,
            f"the identifier's birth date {encoded.birth_digits} is impossible",
        )
    rec_sex = record_sex(sex)
    if birth_date is not None and birth_date != encoded.birth_date:
        # Newborns are often registered under a parent's number until they get their own.
        if encoded.birth_date < birth_date and _one_year_before(today) <= birth_date <= today:
            return Consistency(
                status.INCONSISTENT,
                reason.NEWBORN_UNDER_OTHER_ID,
                "an infant's record carries the number of someone born earlier (a parent's?)",
            )
        also = "; so does its sex" if rec_sex is not None and rec_sex is not encoded.sex else ""
        return Consistency(
            status.INCONSISTENT,
            reason.BIRTH_DATE_MISMATCH,
            f"the record's birth date differs from the identifier's{also}",
        )
    if rec_sex is not None and rec_sex is not encoded.sex:
        return Consistency(
            status.INCONSISTENT,
            reason.SEX_MISMATCH,
            "the record's sex differs from the identifier's",
        )
    if birth_date is None and rec_sex is None:
        return Consistency(
            status.UNVERIFIABLE, reason.DEMOGRAPHICS_MISSING, "the record has no birth date or sex"
        )
    if birth_date is None:
        return Consistency(
            status.UNVERIFIABLE,
            reason.BIRTH_DATE_MISSING,
            "sex agrees; the record has no birth date",
        )
    if rec_sex is None:
        return Consistency(
            status.UNVERIFIABLE,
            reason.SEX_MISSING,
            "birth date agrees; the record's sex is not male or female",
        )
    return Consistency(
        status.CONSISTENT, reason.AGREES, "birth date and sex agree with the identifier"
    )


# ------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class IdentifierSystem:
    """One identifier system (schemas/identity/identifier-systems.yaml)."""

    code: str
    uri: str
    name_zh: str
    name_en: str
    aliases: tuple[str, ...]
    scope: IdentifierScope
    format: str
    trusted_for_linking: bool
    encodes_demographics: bool
    # A system whose numbers are also numbers of another system (a residence permit's
    # number is a 公民身份号码): values valid there link under that system's key.
    links_as: str | None = None
    source: str | None = None  # the defining document; None = unverified default


def alias_key(system: str) -> str:
    """How system strings are compared: NFKC, trimmed, case-insensitive."""
    return nfkc(system).strip().lower()


@dataclass(frozen=True)
class IdentifierRegistry:
    """Known identifier systems, the spellings that name them, and per-hospital spellings."""

    systems: Mapping[str, IdentifierSystem]  # by code
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias_key -> code
    hospitals: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        systems: Iterable[IdentifierSystem],
        hospitals: Mapping[str, Mapping[str, str]] | None = None,
    ) -> IdentifierRegistry:
        """Index the systems; ValueError when two systems claim one spelling or a reference
        (format, links_as, hospital alias) names nothing."""
        by_code: dict[str, IdentifierSystem] = {}
        aliases: dict[str, str] = {}
        for s in systems:
            if s.code in by_code:
                raise ValueError(f"identifier system {s.code} is listed twice")
            if s.format not in FORMATS:
                raise ValueError(f"{s.code}: unknown format {s.format}")
            if s.encodes_demographics and FORMATS[s.format].demographics is None:
                raise ValueError(f"{s.code}: format {s.format} encodes no demographics")
            by_code[s.code] = s
            for spelling in (s.uri, *s.aliases):
                key = alias_key(spelling)
                if aliases.setdefault(key, s.code) != s.code:
                    raise ValueError(f"{spelling!r} names both {aliases[key]} and {s.code}")
        for s in by_code.values():
            target = by_code.get(s.links_as) if s.links_as else None
            if s.links_as and (target is None or target.scope is not s.scope):
                raise ValueError(f"{s.code}: links_as {s.links_as} is not a system of its scope")
        local: dict[str, Mapping[str, str]] = {}
        for hospital, table in (hospitals or {}).items():
            for spelling, code in table.items():
                if code not in by_code:
                    raise ValueError(f"hospital {hospital}: {spelling!r} maps to unknown {code}")
            local[hospital] = MappingProxyType({alias_key(k): v for k, v in table.items()})
        return cls(MappingProxyType(by_code), MappingProxyType(aliases), MappingProxyType(local))

    def system_for(self, system: str | None, *, hospital: str) -> IdentifierSystem | None:
        """The known system a spelling names (the hospital's own spellings first)."""
        key = alias_key(system or "")
        code = self.hospitals.get(hospital, {}).get(key) or self.aliases.get(key)
        return self.systems[code] if code else None

    def by_uri(self, uri: str) -> IdentifierSystem | None:
        code = self.aliases.get(alias_key(uri))
        found = self.systems[code] if code else None
        return found if found is not None and found.uri == uri else None

    def normalise(
        self, system: str | None, value: str | None, *, hospital: str
    ) -> PatientIdentifier | None:
        """Normalise one identifier as published by `hospital`; None when it has no value.

        A known system's value is validated (InvalidIdentifier says why it fails); an
        unknown system (or none) is scoped to the hospital, never an error, exactly as
        `identifiers.normalise` does.
        """
        if value is None:
            return None
        value = nfkc(value)
        if not value.strip():
            return None
        known = self.system_for(system, hospital=hospital)
        if known is None:
            raw = nfkc(system or "").strip()
            return PatientIdentifier(raw, value.strip(), IdentifierScope.HOSPITAL, hospital)
        canonical = FORMATS[known.format].validate(value)
        if known.links_as:
            shared = self.systems[known.links_as]
            try:
                canonical = FORMATS[shared.format].validate(canonical)
                known = shared
            except InvalidIdentifier:
                pass  # e.g. a 15-character permanent-residence card: its own number space
        if known.scope is IdentifierScope.NATIONAL:
            return PatientIdentifier(known.uri, canonical, IdentifierScope.NATIONAL, None)
        return PatientIdentifier(known.uri, canonical, IdentifierScope.HOSPITAL, hospital)

    def encoded_demographics(self, identifier: PatientIdentifier) -> EncodedDemographics | None:
        known = self.by_uri(identifier.system)
        if known is None or not known.encodes_demographics:
            return None
        extract = FORMATS[known.format].demographics
        return extract(identifier.value) if extract is not None else None

    def consistency(
        self,
        identifier: PatientIdentifier,
        *,
        birth_date: date | None,
        sex: str | None,
        today: date,
    ) -> Consistency:
        """Does the record (birth date; sex as FHIR male/female/other/unknown, HL7 M/F/O/U
        or GB/T 2261.1 1/2) agree with what the identifier encodes?

        Missing data is UNVERIFIABLE, not INCONSISTENT; see schemas/identity/README.md
        for what callers should do with it.
        """
        return check_consistency(
            self.encoded_demographics(identifier), birth_date=birth_date, sex=sex, today=today
        )

    def may_auto_link(self, identifier: PatientIdentifier, consistency: Consistency) -> bool:
        """Link across hospitals without review: a trusted national system, and a record
        whose birth date and sex were checked and agree."""
        known = self.by_uri(identifier.system)
        return (
            known is not None
            and known.trusted_for_linking
            and known.scope is IdentifierScope.NATIONAL
            and identifier.scope is IdentifierScope.NATIONAL
            and consistency.consistent
        )

    def scoped(
        self, identifier: PatientIdentifier, *, hospital: str, consistency: Consistency | None
    ) -> PatientIdentifier:
        """The identifier as it is linked: a national one links across hospitals only when
        its system is trusted for linking and the record does not contradict what the
        number encodes; otherwise it is scoped to `hospital` (it still finds the patient
        there). `consistency` None: no record to compare (a lookup by a caller).

        A record without a birth date or sex (UNVERIFIABLE) still links on a trusted,
        check-digit-valid number: refusing would unlink every such message, and the
        number itself has passed its check character (docs/patient-matching.md)."""
        if identifier.scope is not IdentifierScope.NATIONAL:
            return identifier
        known = self.by_uri(identifier.system)
        contradicted = (
            consistency is not None and consistency.status is ConsistencyStatus.INCONSISTENT
        )
        if known is not None and known.trusted_for_linking and not contradicted:
            return identifier
        return PatientIdentifier(
            identifier.system, identifier.value, IdentifierScope.HOSPITAL, hospital
        )

    def lookup(
        self, system: str | None, value: str | None, *, hospital: str
    ) -> PatientIdentifier | None:
        """A caller's identifier (a check, a FHIR search, a CDS patient) as ingest links
        it: normalised, then scoped as a record without demographics would be."""
        found = self.normalise(system, value, hospital=hospital)
        return None if found is None else self.scoped(found, hospital=hospital, consistency=None)
