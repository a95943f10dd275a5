"""Load the catalog and policy YAML, checked against their JSON Schemas."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from broker.domain.catalog import Catalog, CatalogItem, ItemKind, RegionOverride
from broker.domain.marks import MarkTable
from broker.domain.recognition import Policy
from broker.domain.registry import LevelMatrix


class ReferenceDataError(ValueError):
    """A catalog, override, mapping or policy file is invalid (the message says where)."""


def default_schemas_dir() -> Path:
    """schemas/ beside the package (a checkout), else ./schemas (the container image)."""
    beside = Path(__file__).resolve().parents[2] / "schemas"
    return beside if beside.is_dir() else Path("schemas").resolve()


def _read(path: Path, schema: Path | None) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReferenceDataError(f"{path}: {exc}") from None
    if schema is not None and schema.exists():
        validator = jsonschema.Draft202012Validator(json.loads(schema.read_text()))
        error = next(iter(validator.iter_errors(data)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            raise ReferenceDataError(f"{path}: {where}: {error.message}")
    return data


def load_catalog(schemas: Path) -> Catalog:
    base = schemas / "catalog"
    doc = _read(base / "catalog.yaml", base / "catalog.schema.json")
    items = {i["code"]: _item(i) for i in doc["items"]}
    regions = tuple(
        _region(_read(p, base / "region.schema.json"))
        for p in sorted((base / "regions").glob("*.yaml"))
    )
    local: dict[tuple[str, str, str], str] = {}
    for p in sorted((base / "mappings").glob("*.yaml")):
        m = _read(p, base / "mapping.schema.json")
        for table in m["mappings"]:
            for code, target in table["codes"].items():
                if target not in items:
                    raise ReferenceDataError(f"{p}: {code} maps to unknown item {target}")
                local[(m["hospital"], table["system"], str(code))] = target
    negative = frozenset(doc.get("negative_list") or ())
    unknown = negative - items.keys()
    if unknown:
        raise ReferenceDataError(f"{base / 'catalog.yaml'}: negative_list names {sorted(unknown)}")
    return Catalog(str(doc["catalog_version"]), items, negative, local, regions)


def _item(i: dict[str, Any]) -> CatalogItem:
    site = i.get("body_site") or {}
    return CatalogItem(
        code=i["code"],
        kind=ItemKind(i["kind"]),
        category=i["category"],
        name_zh=i["name"]["zh"],
        name_en=i["name"]["en"],
        loinc=tuple(str(c) for c in i.get("loinc") or ()),
        recognizable=bool(i["recognizable"]),
        validity_days=int(i["validity_days"]),
        qc_group=i["qc_group"],
        fees={str(t): Decimal(str(v)) for t, v in i["fees"].items()},
        components=tuple(i.get("components") or ()),
        modality=i.get("modality"),
        body_site=str(site["code"]) if site.get("code") else None,
        laterality=bool(i.get("laterality", False)),
        contrast=bool(i.get("contrast", False)),
    )


def _region(r: dict[str, Any]) -> RegionOverride:
    return RegionOverride(
        region=str(r["region"]),
        validity_days={k: int(v) for k, v in (r.get("validity_days") or {}).items()},
        fees={
            k: {str(t): Decimal(str(v)) for t, v in tiers.items()}
            for k, tiers in (r.get("fees") or {}).items()
        },
        negative_add=frozenset(r.get("negative_list_add") or ()),
        negative_remove=frozenset(r.get("negative_list_remove") or ()),
    )


def load_policy(schemas: Path) -> Policy:
    doc = _read(schemas / "policy" / "recognition-policy.yaml", None)
    try:
        areas = {str(k): tuple(str(p) for p in v) for k, v in doc["mark_areas"].items()}
        matrix = {str(k): frozenset(str(x) for x in v) for k, v in doc["level_matrix"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReferenceDataError(f"recognition-policy.yaml: {exc}") from None
    return Policy(MarkTable(areas), LevelMatrix(matrix))
