"""A patient's demographics as one message names them (no I/O, no heavy imports: ingest
carries them on every Patient reference; broker.domain.matching compares them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any


@dataclass(frozen=True)
class Demographics:
    """A patient as one message names them, values as sent.

    `family`/`given` when the sender splits the name, else `full_name` (characters, or
    pinyin/latin in any order: "ZHANG WEI", "Wei Zhang", "ZHANGWEI"). `sex` as FHIR
    administrative gender (male/female) or M/F/男/女. `identifiers`: trusted link keys
    (system, key), e.g. a resident ID whose check character is right (see
    `resident_id_key`); never a value that failed validation."""

    family: str | None = None
    given: str | None = None
    full_name: str | None = None
    sex: str | None = None
    birth_date: date | None = None
    phone: str | None = None
    address: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()


def of_fhir_patient(
    patient: Mapping[str, Any],
    birth_date: date | None,
    identifiers: tuple[tuple[str, str], ...] = (),
) -> Demographics | None:
    """What patient matching compares, from a FHIR Patient: name (official or usual
    first), gender, telecom (the first phone) and address (its text, else its parts); the
    birth date and trusted identifiers as the caller read them. One reading for ingest and
    for PDQm queries, so like is compared with like. None when nothing but gender, birth
    date and identifiers is given (ingest stores no record then)."""
    name = _first(patient.get("name"), prefer=("official", "usual"))
    family = name.get("family") if isinstance(name.get("family"), str) else None
    given_parts = [g for g in name.get("given") or [] if isinstance(g, str)]
    text = name.get("text") if isinstance(name.get("text"), str) else None
    gender = patient.get("gender") if isinstance(patient.get("gender"), str) else None
    phone = next(
        (
            t.get("value")
            for t in patient.get("telecom") or []
            if isinstance(t, dict)
            and t.get("system") in ("phone", "sms")
            and isinstance(t.get("value"), str)
        ),
        None,
    )
    found = Demographics(
        family=family,
        given="".join(given_parts) or None,
        full_name=text if not (family or given_parts) else None,
        sex=gender,
        birth_date=birth_date,
        phone=phone,
        address=_address(_first(patient.get("address"), prefer=("home",))),
        identifiers=identifiers,
    )
    empty = Demographics(birth_date=birth_date, sex=gender, identifiers=identifiers)
    return None if found == empty else found


def _first(value: object, *, prefer: tuple[str, ...]) -> dict[str, Any]:
    """The first element whose `use` is preferred, else the first one; {} when none."""
    items = [v for v in value or [] if isinstance(v, dict)] if isinstance(value, list) else []
    for use in prefer:
        for item in items:
            if item.get("use") == use:
                return item
    return items[0] if items else {}


def _address(address: dict[str, Any]) -> str | None:
    if isinstance(address.get("text"), str) and address["text"].strip():
        return str(address["text"])
    parts = [address.get(k) for k in ("state", "city", "district")]
    parts += list(address.get("line") or [])
    joined = "".join(p for p in parts if isinstance(p, str))
    return joined or None
