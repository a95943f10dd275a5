"""The item catalog: what may be recognised, for how long, at what fee (pure data).

Loaded from schemas/catalog/ (see its README for where each default comes from); a
region's overrides are applied for the ordering hospital before any decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import cached_property

from broker.domain.sites import EMPTY_SITES, ENHANCED, PLAIN, SiteTable

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
class AgeBand:
    """An age range (in days at order time) where the item is excluded or has its own window."""

    reason_zh: str
    reason_en: str
    min_days: int = 0
    max_days: int | None = None  # exclusive
    exclude: bool = False
    validity_days: int | None = None  # 0: the same calendar day only

    def applies(self, age_days: int) -> bool:
        return age_days >= self.min_days and (self.max_days is None or age_days < self.max_days)


class InvalidFundShare(ValueError):
    """A reimbursement ratio that is not a fraction from 0 to 1 (the message says which)."""


@dataclass(frozen=True)
class FundShare:
    """The fraction of an item's fee the medical-insurance fund pays (医保基金支付比例), as
    set by a province's or city's medical-insurance bureau; the patient pays the rest.

    `source` cites the document stating it; None marks an `unverified-default`."""

    share: Decimal
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.share, Decimal) or not self.share.is_finite():
            raise InvalidFundShare(f"fund share {self.share!r} is not a decimal number")
        if not Decimal(0) <= self.share <= Decimal(1):
            raise InvalidFundShare(
                f"fund share {self.share} is not a fraction from 0 to 1 (write the part "
                "of the fee the medical-insurance fund pays, e.g. 0.70 for 70 %)"
            )


def fund_share(value: str, source: str | None = None) -> FundShare:
    """A FundShare from its decimal text; InvalidFundShare for anything else."""
    try:
        share = Decimal(value)
    except (ArithmeticError, ValueError, TypeError):
        raise InvalidFundShare(f"fund share {value!r} is not a decimal number") from None
    return FundShare(share, source)


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
    laterality: bool = False  # sided: left, right and both are told apart
    protocol: str | None = None  # imaging: plain (平扫), enhanced (增强), angiography …
    validity_source: str | None = None  # the document citing validity_days; None: default
    age_bands: tuple[AgeBand, ...] = ()
    pregnancy_sensitive: bool = False
    charge_codes: tuple[str, ...] = ()
    fund_share: FundShare | None = None  # None: the catalog gives no reimbursement ratio

    @property
    def contrast(self) -> bool:
        return self.protocol == ENHANCED

    def fee(self, tier: str) -> Decimal | None:
        return self.fees.get(tier)

    def age_band(self, age_days: int) -> AgeBand | None:
        return next((b for b in self.age_bands if b.applies(age_days)), None)

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
    version: str | None = None
    effective_from: date | None = None
    source: str | None = None  # the published list the override transcribes
    sources: Mapping[str, str] = field(default_factory=dict)  # per item, when different
    requires_final_report: bool | None = None
    # The region's reimbursement ratios: per category (LAB, CT …), then per item (wins).
    fund_share_categories: Mapping[str, FundShare] = field(default_factory=dict)
    fund_shares: Mapping[str, FundShare] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.region}@{self.version or '-'}"


@dataclass(frozen=True)
class Catalog:
    version: str
    items: Mapping[str, CatalogItem]
    negative_list: frozenset[str]
    # (hospital, local system, local code) -> catalog code; hospital "*" applies to all
    local_codes: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    regions: tuple[RegionOverride, ...] = ()
    sites: SiteTable = EMPTY_SITES
    # The region overrides applied (by for_region), so a check can record exactly what it used.
    applied: tuple[str, ...] = ()
    requires_final_report: bool = False  # imaging: a study counts only with its final report
    by_loinc: Mapping[str, str] = field(init=False, repr=False)
    # for_region's answers: a check asks for the same view on every request.
    _views: dict[tuple[str, date | None], Catalog] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        index = {code: item.code for item in self.items.values() for code in item.loinc}
        object.__setattr__(self, "by_loinc", index)

    @cached_property
    def _codes_by_item(self) -> Mapping[str, frozenset[str]]:
        found: dict[str, set[str]] = {code: {code} for code in self.items}
        for loinc, code in self.by_loinc.items():
            found[code].add(loinc)
        for (_scope, _system, local), code in self.local_codes.items():
            found.setdefault(code, set()).add(local)
        return {code: frozenset(codes) for code, codes in found.items()}

    @cached_property
    def imaging_coverage(self) -> frozenset[tuple[str, str | None]]:
        """(modality, canonical body site) pairs some imaging item covers, every equivalent
        modality spelled out: built once, not a scan of the items per imaging item."""
        return frozenset(
            (modality, self.sites.canonical(item.body_site))
            for item in self.items.values()
            if item.kind is ItemKind.IMAGING
            for modality in item.modalities()
        )

    def codes_meaning(self, item_code: str) -> frozenset[str]:
        """Every code (catalog, LOINC or a hospital's local code, whatever its system)
        that `item_for_code` can map to the item: what storage may filter rows by."""
        return self._codes_by_item.get(item_code, frozenset())

    @property
    def version_label(self) -> str:
        """The catalog release plus every regional list applied, e.g. 2026.11+51@2024.03."""
        return "+".join((self.version, *self.applied))

    def for_region(self, region: str, on: date | None = None) -> Catalog:
        """The catalog as seen from `region` on a day: overrides in force applied, least
        specific first (a list not yet in force on `on` is skipped)."""
        key = (region, on)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= 256:  # a long-running process sees a new day each day
                self._views.clear()
            view = self._views[key] = self._view(region, on)
        return view

    def _view(self, region: str, on: date | None) -> Catalog:
        applicable = sorted(
            (
                r
                for r in self.regions
                if region.startswith(r.region)
                and (on is None or r.effective_from is None or r.effective_from <= on)
            ),
            key=lambda r: len(r.region),
        )
        if not applicable:
            return replace(self, regions=())
        items = dict(self.items)
        negative = set(self.negative_list)
        final_report = self.requires_final_report
        for override in applicable:
            for code, days in override.validity_days.items():
                if code in items:
                    cited = override.sources.get(code, override.source)
                    items[code] = replace(items[code], validity_days=days, validity_source=cited)
            for code, fees in override.fees.items():
                if code in items:
                    items[code] = replace(items[code], fees={**items[code].fees, **fees})
            for code, item in list(items.items()):
                share = override.fund_share_categories.get(item.category)
                if share is not None:
                    items[code] = replace(item, fund_share=share)
            for code, share in override.fund_shares.items():
                if code in items:
                    items[code] = replace(items[code], fund_share=share)
            negative |= override.negative_add
            negative -= override.negative_remove
            if override.requires_final_report is not None:
                final_report = override.requires_final_report
        return Catalog(
            self.version,
            items,
            frozenset(negative),
            self.local_codes,
            (),
            self.sites,
            tuple(o.label for o in applicable),
            final_report,
        )

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
        self, modality: str, body_site: str | None, protocol: str | None
    ) -> CatalogItem | None:
        """The imaging item for a modality, body site (any spelling the site table knows)
        and protocol (None means plain, 平扫)."""
        site = self.sites.canonical(body_site)
        wanted = protocol or PLAIN
        for item in self.items.values():
            if (
                item.kind is ItemKind.IMAGING
                and modality.upper() in item.modalities()
                and self.sites.canonical(item.body_site) == site
                and (item.protocol or PLAIN) == wanted
            ):
                return item
        return None

    def excluded(self, item: CatalogItem) -> bool:
        return not item.recognizable or item.code in self.negative_list
