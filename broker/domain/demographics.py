"""A patient's demographics as one message names them (no I/O, no heavy imports: ingest
carries them on every Patient reference; broker.domain.matching compares them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


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
