"""Load the catalog and policy YAML, checked against their JSON Schemas."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from broker.domain.catalog import (
    AgeBand,
    Catalog,
    CatalogItem,
    FundShare,
    InvalidFundShare,
    ItemKind,
    RegionOverride,
    fund_share,
)
from broker.domain.marks import MarkTable
from broker.domain.recognition import Policy
from broker.domain.registry import LevelMatrix
from broker.domain.scope import AcceptRule, Agreement, HospitalClass, LevelRules, ScopeRules
from broker.domain.sites import Protocol, Side, Site, SiteTable


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
            hint = error.schema.get("description") if isinstance(error.schema, dict) else None
            # A value of the wrong shape says what the field takes (e.g. a fund share).
            tail = f" — {hint}" if hint and error.validator in ("pattern", "type") else ""
            raise ReferenceDataError(f"{path}: {where}: {error.message}{tail}")
    return data


def load_catalog(schemas: Path, extra: Path | None = None) -> Catalog:
    """The catalog with its regional overrides and local-code mappings.

    `extra` is an optional folder laid out like schemas/catalog/ (regions/*.yaml,
    mappings/*.yaml; the data folder's catalog/, written by `mrb catalog import`), checked
    against the same schemas and read after the shipped files: for the same region its
    override is applied after the shipped one, so it wins per field and per item.
    """
    base = schemas / "catalog"
    path = base / "catalog.yaml"
    doc = _read(path, base / "catalog.schema.json")
    by_category = _shares(path, "fund_share_categories", doc.get("fund_share_categories"))
    items: dict[str, CatalogItem] = {}
    for n, i in enumerate(doc["items"]):
        own = i.get("fund_share")
        share = (
            _share(path, f"items/{n}/fund_share", own)
            if own is not None
            else by_category.get(i["category"])
        )
        items[i["code"]] = _item(i, share)
    folders = (base,) if extra is None else (base, extra)
    regions = tuple(
        _region(p, _read(p, base / "region.schema.json"))
        for folder in folders
        for p in sorted((folder / "regions").glob("*.yaml"))
    )
    local: dict[tuple[str, str, str], str] = {}
    mapping_files = [p for f in folders for p in sorted((f / "mappings").glob("*.yaml"))]
    for p in mapping_files:
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
    return Catalog(
        str(doc["catalog_version"]), items, negative, local, regions, load_sites(schemas)
    )


def load_sites(schemas: Path) -> SiteTable:
    base = schemas / "catalog"
    path = base / "body-sites.yaml"
    if not path.exists():
        return SiteTable()
    doc = _read(path, base / "body-sites.schema.json")
    sites = {
        str(s["code"]): Site(
            str(s["code"]),
            s["display"],
            tuple(s.get("zh") or ()),
            tuple(s.get("dicom") or ()),
            tuple(str(c) for c in s.get("snomed") or ()),
            bool(s.get("sided", False)),
        )
        for s in doc["sites"]
    }
    sides = {
        str(code): Side(str(code), s["display"], s["zh"], s["dicom"])
        for code, s in doc["sides"].items()
    }
    protocols = {
        code: Protocol(code, p["zh"], p["en"], tuple(p.get("terms") or ()))
        for code, p in doc["protocols"].items()
    }
    return SiteTable(sites, sides, protocols)


def cited(source: Any) -> str | None:
    """A source as one line (document, issuer, date); None for an unverified default."""
    if not isinstance(source, dict):
        return None
    parts = [source.get("document"), source.get("issuer"), source.get("date")]
    return "，".join(str(p) for p in parts if p)


def _share(path: Path, where: str, value: dict[str, Any]) -> FundShare:
    """A reimbursement ratio with its source (`unverified-default` or a document)."""
    try:
        return fund_share(str(value["share"]), cited(value.get("source")))
    except InvalidFundShare as exc:
        raise ReferenceDataError(f"{path}: {where}: {exc}") from None


def _shares(path: Path, where: str, value: dict[str, Any] | None) -> dict[str, FundShare]:
    return {str(k): _share(path, f"{where}/{k}", v) for k, v in (value or {}).items()}


def _item(i: dict[str, Any], share: FundShare | None = None) -> CatalogItem:
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
        protocol=i.get("protocol"),
        validity_source=cited(i.get("validity_source")),
        age_bands=tuple(_band(b) for b in i.get("age_bands") or ()),
        pregnancy_sensitive=bool(i.get("pregnancy_sensitive", False)),
        charge_codes=tuple(str(c) for c in i.get("charge_codes") or ()),
        fund_share=share,
    )


def _band(b: dict[str, Any]) -> AgeBand:
    return AgeBand(
        reason_zh=b["reason"]["zh"],
        reason_en=b["reason"]["en"],
        min_days=int(b.get("min_days", 0)),
        max_days=int(b["max_days"]) if b.get("max_days") is not None else None,
        exclude=bool(b.get("exclude", False)),
        validity_days=int(b["validity_days"]) if b.get("validity_days") is not None else None,
    )


def _region(path: Path, r: dict[str, Any]) -> RegionOverride:
    return RegionOverride(
        region=str(r["region"]),
        validity_days={k: int(v) for k, v in (r.get("validity_days") or {}).items()},
        fees={
            k: {str(t): Decimal(str(v)) for t, v in tiers.items()}
            for k, tiers in (r.get("fees") or {}).items()
        },
        negative_add=frozenset(r.get("negative_list_add") or ()),
        negative_remove=frozenset(r.get("negative_list_remove") or ()),
        version=str(r["version"]) if r.get("version") else None,
        effective_from=_date(r.get("effective_from")),
        source=cited(r.get("source")),
        sources={k: s for k, v in (r.get("sources") or {}).items() if (s := cited(v))},
        requires_final_report=r.get("requires_final_report"),
        fund_share_categories=_shares(
            path, "fund_share_categories", r.get("fund_share_categories")
        ),
        fund_shares=_shares(path, "fund_shares", r.get("fund_shares")),
    )


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def load_policy(schemas: Path) -> Policy:
    path = schemas / "policy" / "recognition-policy.yaml"
    doc = _read(path, schemas / "policy" / "recognition-policy.schema.json")
    try:
        areas = {str(k): tuple(str(p) for p in v) for k, v in doc["mark_areas"].items()}
        matrix = {str(k): frozenset(str(x) for x in v) for k, v in doc["level_matrix"].items()}
        matrices = tuple(_matrix(m) for m in doc.get("level_matrices") or ())
        agreements = tuple(_agreement(a) for a in doc.get("agreements") or ())
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ReferenceDataError(f"{path}: {exc!r}") from None
    default = LevelRules(
        "",
        tuple(
            AcceptRule(HospitalClass(frozenset({o})), HospitalClass(issuing))
            for o, issuing in matrix.items()
        ),
        name="default (unverified)",
    )
    scope = ScopeRules((default, *matrices), agreements)
    version = str(doc.get("policy_version") or "unversioned")
    return Policy(MarkTable(areas), LevelMatrix(matrix), scope, version)


def _class(c: Any) -> HospitalClass:
    if isinstance(c, list):
        return HospitalClass(frozenset(str(x) for x in c))
    owners = c.get("ownership")
    return HospitalClass(
        frozenset(str(x) for x in c["members"]), frozenset(owners) if owners else None
    )


def _matrix(m: dict[str, Any]) -> LevelRules:
    rules = tuple(
        AcceptRule(
            _class(r["ordering"]),
            _class(r["issuing"]),
            frozenset(r["kinds"]) if r.get("kinds") else None,
        )
        for r in m["rules"]
    )
    return LevelRules(
        str(m["region"]),
        rules,
        name=str(m.get("name") or m["region"]),
        effective_from=_date(m.get("effective_from")),
        effective_to=_date(m.get("effective_to")),
        source=cited(m.get("source")),
    )


def _agreement(a: dict[str, Any]) -> Agreement:
    return Agreement(
        id=str(a["id"]),
        name_zh=a["name"]["zh"],
        name_en=a["name"]["en"],
        members=tuple(str(m) for m in a["members"]),
        marks=frozenset(a["marks"]),
        # Absent means every item; an empty list means none (never "every" by accident).
        items=frozenset(a["items"]) if "items" in a else None,
        kinds=frozenset(a["kinds"]) if "kinds" in a else None,
        effective_from=_date(a.get("effective_from")),
        effective_to=_date(a.get("effective_to")),
        source=cited(a.get("source")),
    )
