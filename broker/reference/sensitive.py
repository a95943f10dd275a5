"""Load schemas/catalog/sensitive.yaml (sensitive result categories), checked against its
JSON Schema and the catalog it names items of."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from broker.domain.catalog import Catalog
from broker.domain.sensitivity import SensitiveCategory, SensitivityTable
from broker.reference.loader import (
    ReferenceDataError,
    _read,
    cited,
    default_schemas_dir,
    load_catalog,
)


def sensitive_path(schemas: Path) -> Path:
    return schemas / "catalog" / "sensitive.yaml"


def load_sensitivity(schemas: Path, catalog: Catalog) -> SensitivityTable:
    """The national categories, then every region's additions (applied wherever mrb serves
    a result: a result crosses regions, and hiding is the safe way to fail)."""
    path = sensitive_path(schemas)
    doc = _read(path, path.with_name("sensitive.schema.json"))
    return sensitivity_of(doc, catalog, where=str(path))


def sensitivity_of(doc: dict[str, Any], catalog: Catalog, *, where: str) -> SensitivityTable:
    """The table a validated document describes; ReferenceDataError names an unknown item."""
    categories = [_category(c, None) for c in doc["categories"]]
    for r in doc.get("regions") or ():
        categories += [_category(c, str(r["region"])) for c in r["categories"]]
    for c in categories:
        unknown = sorted(c.items - catalog.items.keys())
        if unknown:
            raise ReferenceDataError(f"{where}: category {c.code} names unknown items {unknown}")
    return SensitivityTable(tuple(categories), str(doc["sensitivity_version"]))


@functools.cache
def _shipped() -> tuple[SensitivityTable, Catalog]:
    schemas = default_schemas_dir()
    catalog = load_catalog(schemas)
    return load_sensitivity(schemas, catalog), catalog


def shipped_sensitivity() -> SensitivityTable:
    """The table shipped with mrb, against the shipped catalog (read once per process)."""
    return _shipped()[0]


def shipped_index_codes() -> frozenset[tuple[str, str]]:
    """The (system, code) pairs of the shipped table as the FHIR index stores codes."""
    table, catalog = _shipped()
    return table.index_codes(catalog)


def _category(c: dict[str, Any], region: str | None) -> SensitiveCategory:
    basis = c["basis"]
    loinc = c.get("loinc") or {}
    return SensitiveCategory(
        code=str(c["code"]),
        name_zh=c["name"]["zh"],
        name_en=c["name"]["en"],
        items=frozenset(str(i) for i in c.get("items") or ()),
        loinc=frozenset(str(code) for code in loinc.get("codes") or ()),
        basis=tuple(line for b in basis if (line := cited(b))) if isinstance(basis, list) else (),
        region=region,
    )
