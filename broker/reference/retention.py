"""Load schemas/catalog/retention.yaml (result retention periods), checked against its JSON
Schema and the catalog: items it names must exist, and no period may be shorter than a
validity window it covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.domain.catalog import Catalog
from broker.domain.retention_policy import UNVERIFIED, RetentionPeriod, RetentionPolicy
from broker.reference.loader import ReferenceDataError, _read, cited


def retention_path(schemas: Path) -> Path:
    return schemas / "catalog" / "retention.yaml"


def load_retention(schemas: Path, catalog: Catalog) -> RetentionPolicy:
    """The retention policy shipped in `schemas`, for `catalog` (with its regions)."""
    path = retention_path(schemas)
    doc = _read(path, path.with_name("retention.schema.json"))
    return retention_of(doc, catalog, where=str(path))


def retention_of(doc: dict[str, Any], catalog: Catalog, *, where: str) -> RetentionPolicy:
    """The policy a validated document describes; ReferenceDataError names an unknown or
    repeated item or category, or a period shorter than a validity window it covers."""
    categories: dict[str, RetentionPeriod] = {}
    for c in doc["categories"]:
        if c["category"] in categories:
            raise ReferenceDataError(f"{where}: category {c['category']} is listed twice")
        categories[str(c["category"])] = _period(c)
    items: dict[str, RetentionPeriod] = {}
    for i in doc.get("items") or ():
        code = str(i["item"])
        if code not in catalog.items:
            raise ReferenceDataError(f"{where}: unknown item {code}")
        if code in items:
            raise ReferenceDataError(f"{where}: item {code} is listed twice")
        items[code] = _period(i)
    policy = RetentionPolicy(
        _period(doc["default"]), categories, items, str(doc["retention_version"])
    )
    short = policy.shortfalls(catalog)
    if short:
        raise ReferenceDataError(f"{where}: retention shorter than recognition: {'; '.join(short)}")
    return policy


def _period(p: dict[str, Any]) -> RetentionPeriod:
    return RetentionPeriod(
        days=int(p["days"]),
        source=cited(p["days_source"]) or UNVERIFIED,
        basis=tuple(line for b in p["basis"] if (line := cited(b))),
    )
