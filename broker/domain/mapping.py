"""Which codes of a result need a local-code mapping before they can be recognised (pure).

Hospitals often send their own LIS test codes or HIS charge codes instead of LOINC. A
lab item none of whose codes leads to a catalog item, and which carries such a local
code, cannot be recognised until hospital IT maps that code: it goes on the worklist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.domain.catalog import CATALOG_SYSTEM, LOINC_SYSTEM, Catalog
from broker.domain.results import ResultItem

SNOMED_SYSTEM = "http://snomed.info/sct"
# Standard vocabularies: a code from these is not the hospital's to map.
_STANDARD = frozenset({LOINC_SYSTEM, CATALOG_SYSTEM, SNOMED_SYSTEM, "http://unitsofmeasure.org"})
_STANDARD_PREFIXES = (
    "http://terminology.hl7.org/",
    "http://hl7.org/fhir/",
    "urn:oid:2.16.840.1.113883",
)


@dataclass(frozen=True)
class LocalCode:
    system: str
    code: str
    display: str | None


def is_local(system: str) -> bool:
    return system not in _STANDARD and not system.startswith(_STANDARD_PREFIXES)


def unmapped_codes(catalog: Catalog, hospital: str, items: Iterable[ResultItem]) -> list[LocalCode]:
    """Local codes of lab items that map to no catalog item, and imaging body sites that
    the site table does not know or no catalog item of that modality covers."""
    out: dict[tuple[str, str], LocalCode] = {}
    for item in items:
        if item.modality is not None:
            site = item.body_site
            if site is not None and not _imaging_known(catalog, item.modality, site.code):
                out.setdefault(
                    (site.system, site.code),
                    LocalCode(site.system, site.code, f"{item.modality} {site.display or ''}"),
                )
            continue
        if not item.codings:
            continue
        if any(catalog.item_for_code(hospital, c.system, c.code) for c in item.codings):
            continue
        for c in item.codings:
            if c.system and c.code and is_local(c.system):
                out.setdefault((c.system, c.code), LocalCode(c.system, c.code, c.display))
    return list(out.values())


def _imaging_known(catalog: Catalog, modality: str, site: str) -> bool:
    if catalog.sites.sites and catalog.sites.site(site) is None:
        return False
    return (modality.upper(), catalog.sites.canonical(site)) in catalog.imaging_coverage
