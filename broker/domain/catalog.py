"""The item catalog: what may be recognised, for how long, at what fee (pure data).

Loaded from schemas/catalog/ (see its README for where each default comes from); a
region's overrides are applied for the ordering hospital before any decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

CATALOG_SYSTEM = "urn:mrb:catalog"
LOINC_SYSTEM = "http://loinc.org"
# A DR order is met by digital (DX) or computed (CR) radiography (DESIGN.md).
MODALITY_EQUIVALENTS: Mapping[str, frozenset[str]] = {
    "DX": frozenset({"DX", "CR", "DR"}),
    "DR": frozenset({"DX", "CR", "DR"}),
    "CR": frozenset({"DX", "CR", "DR"}),
}


class ItemKind(StrEnum):
    LAB = "lab"
    PANEL = "panel"
    IMAGING = "imaging"


@dataclass(frozen=True)
class CatalogItem:
    code: str
    kind: ItemKind
    category: str  # LAB | DR | CT | MR | US | OTHER (regulator reporting)
    name_zh: str
    name_en: str
    loinc: tuple[str, ...]
    recognizable: bool
    validity_days: int
    qc_group: str
    fees: Mapping[str, Decimal]  # price tier -> yuan
    components: tuple[str, ...] = ()
    modality: str | None = None
    body_site: str | None = None  # SNOMED CT code
    laterality: bool = False  # left and right are told apart
    contrast: bool = False  # 增强 (True) or 平扫 (False)

    def fee(self, tier: str) -> Decimal | None:
        return self.fees.get(tier)

    def modalities(self) -> frozenset[str]:
        m = (self.modality or "").upper()
        return MODALITY_EQUIVALENTS.get(m, frozenset({m}))


@dataclass(frozen=True)
class RegionOverride:
    """A province's or city's own validity windows, fees and negative list."""

    region: str  # GB/T 2260 prefix: 2 (province), 4 (city) or 6 digits (county)
    validity_days: Mapping[str, int] = field(default_factory=dict)
    fees: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    negative_add: frozenset[str] = frozenset()
    negative_remove: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Catalog:
    version: str
    items: Mapping[str, CatalogItem]
    negative_list: frozenset[str]
    # (hospital, local system, local code) -> catalog code; hospital "*" applies to all
    local_codes: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    regions: tuple[RegionOverride, ...] = ()
    by_loinc: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {code: item.code for item in self.items.values() for code in item.loinc}
        object.__setattr__(self, "by_loinc", index)

    def for_region(self, region: str) -> Catalog:
        """The catalog as seen from `region`: overrides applied, least specific first."""
        applicable = sorted(
            (r for r in self.regions if region.startswith(r.region)), key=lambda r: len(r.region)
        )
        if not applicable:
            return self
        items = dict(self.items)
        negative = set(self.negative_list)
        for override in applicable:
            for code, days in override.validity_days.items():
                if code in items:
                    items[code] = replace(items[code], validity_days=days)
            for code, fees in override.fees.items():
                if code in items:
                    items[code] = replace(items[code], fees={**items[code].fees, **fees})
            negative |= override.negative_add
            negative -= override.negative_remove
        return Catalog(self.version, items, frozenset(negative), self.local_codes, ())

    def item_for_code(self, hospital: str | None, system: str, code: str) -> CatalogItem | None:
        """The catalog item a coded order or result means (LOINC, catalog or local code)."""
        if system == CATALOG_SYSTEM:
            return self.items.get(code)
        if system == LOINC_SYSTEM:
            found = self.by_loinc.get(code)
            return self.items[found] if found else None
        for scope in (hospital or "*", "*"):
            mapped = self.local_codes.get((scope, system, code))
            if mapped is not None:
                return self.items.get(mapped)
        return None

    def imaging_item(
        self, modality: str, body_site: str | None, contrast: bool | None
    ) -> CatalogItem | None:
        """The imaging item for a modality, body site and contrast (None means plain)."""
        for item in self.items.values():
            if (
                item.kind is ItemKind.IMAGING
                and modality.upper() in item.modalities()
                and item.body_site == body_site
                and item.contrast == bool(contrast)
            ):
                return item
        return None

    def excluded(self, item: CatalogItem) -> bool:
        return not item.recognizable or item.code in self.negative_list
