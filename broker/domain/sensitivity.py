"""Sensitive results (issue "Patient rights"): which results no other hospital may see.

A result is sensitive when any of its rows is of a sensitive category (HIV, syphilis,
hepatitis B and C markers, psychiatric assessments, genetic tests, what a region adds):
the row maps to a catalog item of the category (LOINC, catalog or a hospital's local
code), or carries a LOINC code the category lists for results no item maps to. Such a
result is never shown, counted or hinted at to a hospital other than its issuer unless the
patient's consent for every sensitive category in it is recorded (艾滋病防治条例 Art. 39;
PIPL Arts. 28-29). The whole result is hidden, never only its sensitive rows: a panel's
name and its other rows tell what was tested.

Data: schemas/catalog/sensitive.yaml (broker/reference/sensitive.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from broker.domain.catalog import CATALOG_SYSTEM, LOINC_SYSTEM, Catalog, CatalogItem
from broker.domain.results import Coding


@dataclass(frozen=True)
class SensitiveCategory:
    code: str  # HIV, SYPHILIS, HBV, HCV, PSYCHIATRIC, GENETIC, ...
    name_zh: str
    name_en: str
    items: frozenset[str] = frozenset()  # catalog item codes
    loinc: frozenset[str] = frozenset()  # LOINC codes of results no catalog item maps to
    basis: tuple[str, ...] = ()  # the texts cited, one line each; () an unverified default
    region: str | None = None  # a region's addition (GB/T 2260 prefix); None: national


class Row(Protocol):
    """What a result row must tell (broker.domain.recognition.PriorItem has it)."""

    @property
    def result_id(self) -> str: ...

    @property
    def hospital(self) -> str: ...

    @property
    def codings(self) -> tuple[Coding, ...]: ...


@dataclass(frozen=True)
class SensitivityTable:
    categories: tuple[SensitiveCategory, ...] = ()
    version: str = "none"
    _by_item: Mapping[str, SensitiveCategory] = field(init=False, repr=False, compare=False)
    _by_loinc: Mapping[str, SensitiveCategory] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The first category naming a code wins (the national list before a region's).
        by_item: dict[str, SensitiveCategory] = {}
        by_loinc: dict[str, SensitiveCategory] = {}
        for c in self.categories:
            for code in c.items:
                by_item.setdefault(code, c)
            for code in c.loinc:
                by_loinc.setdefault(code, c)
        object.__setattr__(self, "_by_item", by_item)
        object.__setattr__(self, "_by_loinc", by_loinc)

    def of_item(self, item: CatalogItem | None) -> SensitiveCategory | None:
        """The category of an ordered item: its own, else the first of its components'."""
        if item is None:
            return None
        for code in (item.code, *item.components):
            found = self._by_item.get(code)
            if found is not None:
                return found
        return None

    def is_sensitive(
        self, codings: Iterable[Coding], catalog_item: CatalogItem | None
    ) -> str | None:
        """The category code of one row: by its catalog item, else by a listed LOINC code."""
        if catalog_item is not None and catalog_item.code in self._by_item:
            return self._by_item[catalog_item.code].code
        for c in codings:
            if c.system == LOINC_SYSTEM and c.code in self._by_loinc:
                return self._by_loinc[c.code].code
        return None

    def row_category(self, row: Row, catalog: Catalog) -> str | None:
        """The category of a result row, every coding mapped as the rules map it."""
        for c in row.codings:
            found = self.is_sensitive((c,), catalog.item_for_code(row.hospital, c.system, c.code))
            if found is not None:
                return found
        return None

    def hidden_results(
        self,
        rows: Iterable[Row],
        *,
        viewer: str,
        catalog: Catalog,
        consented: frozenset[str] = frozenset(),
    ) -> frozenset[str]:
        """The results among `rows` hospital `viewer` may not see: another hospital's,
        holding a row of a category the patient has not consented to share."""
        if not self.categories:
            return frozenset()
        hidden: set[str] = set()
        for row in rows:
            if row.hospital == viewer or row.result_id in hidden:
                continue
            category = self.row_category(row, catalog)
            if category is not None and category not in consented:
                hidden.add(row.result_id)
        return frozenset(hidden)

    def index_codes(self, catalog: Catalog) -> frozenset[tuple[str, str]]:
        """Every (system, code) that marks a row sensitive, as the FHIR index stores codes:
        the categories' LOINC codes, and each sensitive item's catalog code, LOINC codes and
        the local codes the catalog maps to it (for storage to filter by)."""
        out: set[tuple[str, str]] = {(LOINC_SYSTEM, code) for code in self._by_loinc}
        for code in self._by_item:
            item = catalog.items.get(code)
            out.add((CATALOG_SYSTEM, code))
            if item is not None:
                out.update((LOINC_SYSTEM, loinc) for loinc in item.loinc)
        for (_hospital, system, local), target in catalog.local_codes.items():
            if target in self._by_item:
                out.add((system, local))
        return frozenset(out)


NO_SENSITIVE_RESULTS = SensitivityTable()
