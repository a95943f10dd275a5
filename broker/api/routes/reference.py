"""Reference data for order-entry screens (the doctor's workbench): the catalog searched
by name or code, and the words for codes (purposes, identifier systems, decisions, sides,
protocols, sensitive categories). No patient data; every role that reads reference data
may read it."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from broker.api.deps import ContainerDep, require
from broker.api.schemas import Text
from broker.domain.actors import Duty
from broker.domain.catalog import Catalog, CatalogItem, ItemKind
from broker.domain.identifiers import IdentifierScope
from broker.reference.purposes import shipped_purposes
from broker.services.access_report import DECISIONS

router = APIRouter(tags=["reference"], dependencies=[Depends(require(Duty.REFERENCE))])

# Identifier systems a doctor looks a patient up by, in the order the picker shows them
# (the national ones first, then the hospital's own numbers).
PICKER = ("resident-id", "health-card", "mrn", "outpatient-no", "inpatient-no",
          "medical-insurance", "hmt-residence-permit", "foreign-permanent-resident-id")  # fmt: skip


class CodeText(BaseModel):
    code: str
    zh: str
    en: str


class CatalogItemOut(BaseModel):
    code: str
    system: str = "urn:mrb:catalog"
    kind: str  # lab | panel | imaging
    category: str
    name: Text
    loinc: list[str]
    recognizable: bool
    validity_days: int
    components: list[str] = []
    modality: str | None = None
    body_site: CodeText | None = None  # imaging: SNOMED CT code, with its names
    sided: bool = False  # imaging: the order must say which side
    protocol: CodeText | None = None  # imaging: plain (平扫), enhanced (增强) …


class PurposeOut(BaseModel):
    code: str  # mrb's audit word
    v3: str  # HL7 v3 ActReason: what the check API and X-Purpose-Of-Use accept
    name: Text
    emergency: bool  # with a reason, may break the glass


class IdentifierSystemOut(BaseModel):
    code: str
    uri: str  # the `system` to send
    name: Text
    scope: str  # national | hospital (a hospital's own number: the caller's hospital)


class VocabularyOut(BaseModel):
    purposes: list[PurposeOut] = Field(description="those a doctor may state")
    identifier_systems: list[IdentifierSystemOut]
    decisions: list[CodeText]
    sides: list[CodeText] = Field(description="SNOMED CT laterality codes")
    protocols: list[CodeText]
    sensitive_categories: list[CodeText] = Field(
        default=[],
        description="the sensitive categories a patient may consent to share "
        "(schemas/catalog/sensitive.yaml)",
    )


@router.get("/api/v1/catalog/items", response_model=list[CatalogItemOut])
async def catalog_items(
    container: ContainerDep,
    q: Annotated[
        str, Query(max_length=64, description="part of a name (zh or en), catalog or LOINC code")
    ] = "",
    kind: Annotated[Literal["lab", "panel", "imaging"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[CatalogItemOut]:
    """Catalog items whose code, LOINC code or name contains `q` (any case), exact codes
    first, then names that start with it; recognisable items before the others."""
    catalog = container.reference_rules().catalog
    needle = _fold(q)
    ranked: list[tuple[int, str, CatalogItem]] = []
    for item in catalog.items.values():
        if kind is not None and item.kind.value != kind:
            continue
        rank = _rank(item, needle)
        if rank is not None:
            ranked.append((rank + (0 if item.recognizable else 10), item.code, item))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [_item(catalog, item) for _, _, item in ranked[:limit]]


@router.get("/api/v1/reference/vocabulary", response_model=VocabularyOut)
async def vocabulary(container: ContainerDep) -> VocabularyOut:
    """The words for the codes the recognition API and pages use, Chinese and English."""
    identifiers = container.identifiers()
    sites = container.reference_rules().catalog.sites
    systems = [identifiers.systems[c] for c in PICKER if c in identifiers.systems]
    return VocabularyOut(
        purposes=[
            PurposeOut(
                code=p.code, v3=p.v3, name=Text(zh=p.name_zh, en=p.name_en), emergency=p.emergency
            )
            for p in shipped_purposes().purposes
            if p.doctor
        ],
        identifier_systems=[
            IdentifierSystemOut(
                code=s.code,
                uri=s.uri,
                name=Text(zh=s.name_zh, en=s.name_en),
                scope="hospital" if s.scope is IdentifierScope.HOSPITAL else "national",
            )
            for s in systems
        ],
        decisions=[CodeText(code=k, zh=v.zh, en=v.en) for k, v in DECISIONS.items()],
        sides=[CodeText(code=s.code, zh=s.zh, en=s.display) for s in sites.sides.values()],
        protocols=[CodeText(code=p.code, zh=p.zh, en=p.en) for p in sites.protocols.values()],
        sensitive_categories=[
            CodeText(code=c.code, zh=c.name_zh, en=c.name_en)
            for c in container.reference_rules().sensitivity.categories
        ],
    )


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def _rank(item: CatalogItem, needle: str) -> int | None:
    """0 exact code, 1 name or code starts with the text, 2 contains it; None: no match."""
    if not needle:
        return 2
    codes = [_fold(c) for c in (item.code, *item.loinc)]
    names = [_fold(item.name_zh), _fold(item.name_en)]
    if needle in codes:
        return 0
    if any(t.startswith(needle) for t in (*names, *codes)):
        return 1
    if any(needle in t for t in (*names, *codes)):
        return 2
    return None


def _item(catalog: Catalog, item: CatalogItem) -> CatalogItemOut:
    site = protocol = None
    if item.kind is ItemKind.IMAGING:
        if item.body_site:
            zh, en = catalog.sites.site_name(item.body_site)
            site = CodeText(code=item.body_site, zh=zh, en=en)
        if item.protocol:
            zh, en = catalog.sites.protocol_name(item.protocol)
            protocol = CodeText(code=item.protocol, zh=zh, en=en)
    return CatalogItemOut(
        code=item.code,
        kind=item.kind.value,
        category=item.category,
        name=Text(zh=item.name_zh, en=item.name_en),
        loinc=list(item.loinc),
        recognizable=item.recognizable and item.code not in catalog.negative_list,
        validity_days=item.validity_days,
        components=list(item.components),
        modality=item.modality,
        body_site=site,
        sided=item.laterality,
        protocol=protocol,
    )
