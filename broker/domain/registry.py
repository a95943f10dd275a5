"""Hospitals as the rules see them: level, region, alliances, QC certifications (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class CertifyingBody(StrEnum):
    """Who certified a hospital's quality for an item (室间质评 / 影像质控)."""

    NATIONAL_EQA = "national-eqa"  # 国家卫健委临床检验中心室间质评
    PROVINCIAL_EQA = "provincial-eqa"  # 省临床检验中心室间质评
    PROVINCIAL_IMAGING_QC = "provincial-imaging-qc"  # 省医学影像质控中心
    CITY_EQA = "city-eqa"  # 市临床检验质控中心 (e.g. 泸州市)
    CITY_IMAGING_QC = "city-imaging-qc"  # 市医学影像质控中心

    @property
    def national(self) -> bool:
        return self is CertifyingBody.NATIONAL_EQA

    @property
    def reach(self) -> str:
        """How far the body's certificate carries a mark: national, province or city."""
        if self.national:
            return "national"
        return "city" if self.value.startswith("city-") else "province"


_REACH_ORDER = {"national": 0, "province": 1, "city": 2}


@dataclass(frozen=True)
class Certification:
    """A certification for one catalog item, or for a whole QC group of items."""

    hospital: str
    scope: str  # catalog item code (LAB-HGB) or QC group (HEMATOLOGY)
    body: CertifyingBody
    valid_from: date
    valid_to: date  # inclusive

    def covers(self, item_code: str, qc_group: str, on: date) -> bool:
        return self.scope in (item_code, qc_group) and self.valid_from <= on <= self.valid_to


@dataclass(frozen=True)
class HospitalProfile:
    """A hospital: its registry record and, when read for the rules, its certifications
    (the registry's own reads leave them empty). The one hospital model; `Hospital` names
    it where the record is meant."""

    id: str
    name: str
    region: str  # GB/T 2260, 6 digits
    level: str  # "3" | "2" | "1"
    grade: str | None = None  # 甲 | 乙 | None (未定等)
    ownership: str = "public"  # public | private
    price_tier: str | None = None  # defaults to the level
    alliances: frozenset[str] = frozenset()
    certifications: tuple[Certification, ...] = ()
    timezone: str = "Asia/Shanghai"  # IANA; the zone its zone-less times are read in

    @property
    def tier(self) -> str:
        return self.price_tier or self.level

    @property
    def label(self) -> str:
        """e.g. 三级甲等."""
        level = {"3": "三级", "2": "二级", "1": "一级"}.get(self.level, self.level)
        return f"{level}{self.grade + '等' if self.grade else ''}"

    def certification_for(self, item_code: str, qc_group: str, on: date) -> Certification | None:
        """The certification held for the item on that day, the widest-reaching first
        (national, then provincial, then city), so a result gets the broadest mark it earned."""
        held = [c for c in self.certifications if c.covers(item_code, qc_group, on)]
        held.sort(key=lambda c: _REACH_ORDER[c.body.reach])
        return held[0] if held else None


Hospital = HospitalProfile


@dataclass(frozen=True)
class LevelMatrix:
    """Which issuing levels each ordering level accepts (provincial policy, configurable).

    Default per DOMAIN.md: same level accept each other; lower levels accept higher
    ones; upward recognition only where a province configures it.
    """

    accepts: Mapping[str, frozenset[str]]

    def allows(self, ordering_level: str, issuing_level: str) -> bool:
        return issuing_level in self.accepts.get(ordering_level, frozenset({ordering_level}))


DEFAULT_LEVEL_MATRIX = LevelMatrix(
    {
        "3": frozenset({"3"}),
        "2": frozenset({"3", "2"}),
        "1": frozenset({"3", "2", "1"}),
    }
)
