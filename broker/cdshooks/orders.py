"""Draft orders (`context.draftOrders`, a FHIR Bundle) -> the items a check decides (pure).

Only ServiceRequests are read (labs and imaging); medication, nutrition and other orders
are not tests and are skipped. A ServiceRequest becomes an `Order` when one of its
`code.coding`s is a code the catalog knows (LOINC, `urn:mrb:catalog`, or a local code
system mapped for the ordering hospital, e.g. `urn:mrb:hospital:H002:lab-code`), or
when it names a DICOM modality (`http://dicom.nema.org/resources/ontology/DCM`) with a
SNOMED CT `bodySite`. Laterality is read from `bodySite` (SNOMED CT 7771000 left,
24028007 right, 51440002 both); contrast from the extension
`urn:mrb:fhir:extension:contrast` (valueBoolean; absent means plain, 平扫).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.catalog import Catalog, CatalogItem, ItemKind
from broker.domain.recognition import Order, resolve_order
from mrb_wire.fhir import CONTRAST_URL as CONTRAST_EXTENSION

DICOM_MODALITY_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
LATERALITY_CODES = frozenset({"7771000", "24028007", "51440002"})
# FHIR id: 1-64 of A-Z a-z 0-9 - . (R4 datatypes).
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Statuses a draft order has; order-sign may also re-sign active orders, which are not new.
ADVISED_STATUSES = frozenset({"draft"})
URGENT_PRIORITIES = frozenset({"stat", "asap"})


class InvalidDraftOrders(ValueError):
    """`context.draftOrders` is not a Bundle (the message says what is wrong)."""


@dataclass(frozen=True)
class DraftOrder:
    """One draft ServiceRequest, as much as the rules need of it."""

    ref: str  # "ServiceRequest/<id>"
    codings: tuple[tuple[str, str], ...]  # (system, code) of ServiceRequest.code
    text: str | None  # code.text or the first display, for people
    modality: str | None  # a DICOM modality coding in code, if any
    body_site: str | None  # SNOMED CT body site (not a laterality)
    laterality: str | None  # SNOMED CT laterality code
    contrast: bool | None
    urgent: bool  # priority stat / asap


@dataclass(frozen=True)
class ResolvedOrder:
    draft: DraftOrder
    order: Order
    item: CatalogItem

    @property
    def key(self) -> str:
        return order_key(self.order)


def parse_draft_orders(bundle: object, patient_id: str | None = None) -> list[DraftOrder]:
    """The draft ServiceRequests of `context.draftOrders`, in Bundle order.

    Entries that are not ServiceRequests, have no valid id, are not drafts, or name a
    different patient than the one in context are skipped (never advise on them).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidDraftOrders("context.draftOrders must be a FHIR Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidDraftOrders("context.draftOrders.entry must be an array")
    found: list[DraftOrder] = []
    seen: set[str] = set()
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or res.get("resourceType") != "ServiceRequest":
            continue
        rid = res.get("id")
        if not isinstance(rid, str) or not FHIR_ID.fullmatch(rid):
            continue
        status = res.get("status")
        if status is not None and status not in ADVISED_STATUSES:
            continue
        if patient_id is not None and not _about(res, patient_id):
            continue
        ref = f"ServiceRequest/{rid}"
        if ref in seen:
            continue
        seen.add(ref)
        found.append(_draft(ref, res))
    return found


def selected(orders: Sequence[DraftOrder], selections: Iterable[object]) -> list[DraftOrder]:
    """The orders named in `context.selections` (order-select), in draftOrders order."""
    wanted = {s for s in selections if isinstance(s, str)}
    return [o for o in orders if o.ref in wanted]


def resolve(draft: DraftOrder, catalog: Catalog, hospital: str) -> ResolvedOrder | None:
    """The ordered item for the catalog, or None when the catalog does not know it."""
    for system, code in draft.codings:
        item = catalog.item_for_code(hospital, system, code)
        if item is None:
            continue
        laterality = draft.laterality if item.kind is ItemKind.IMAGING else None
        return ResolvedOrder(draft, Order(system=system, code=code, laterality=laterality), item)
    if draft.modality and draft.body_site:
        order = Order(
            modality=draft.modality,
            body_site=draft.body_site,
            laterality=draft.laterality,
            contrast=draft.contrast,
        )
        item = resolve_order(order, catalog, hospital)
        if item is not None:
            return ResolvedOrder(draft, order, item)
    return None


def order_key(order: Order) -> str:
    """A stable digest of what is ordered: the same draft order changed is a new one."""
    parts = (
        order.system,
        order.code,
        order.modality,
        order.body_site,
        order.laterality,
        None if order.contrast is None else str(order.contrast),
    )
    text = "|".join("" if p is None else p for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


# -- reading one ServiceRequest ----------------------------------------------------------


def _about(res: dict[str, Any], patient_id: str) -> bool:
    """False when the order names another patient (absent subject: the one in context)."""
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str) or not ref:
        return True
    return ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}")


def _draft(ref: str, res: dict[str, Any]) -> DraftOrder:
    code = res.get("code")
    if isinstance(code, dict) and isinstance(code.get("concept"), dict):  # R5 CodeableReference
        code = code["concept"]
    codings = _codings(code)
    modality = next(
        (c.upper() for s, c in codings if s == DICOM_MODALITY_SYSTEM and c.isalnum()), None
    )
    sites = [
        (s, c)
        for concept in _list(res.get("bodySite"))
        for s, c in _codings(concept)
        if s == SNOMED
    ]
    laterality = next((c for _, c in sites if c in LATERALITY_CODES), None)
    body_site = next((c for _, c in sites if c not in LATERALITY_CODES), None)
    return DraftOrder(
        ref=ref,
        codings=tuple((s, c) for s, c in codings if s != DICOM_MODALITY_SYSTEM),
        text=_text(code),
        modality=modality,
        body_site=body_site,
        laterality=laterality,
        contrast=_contrast(res),
        urgent=res.get("priority") in URGENT_PRIORITIES,
    )


def _codings(concept: object) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    out = []
    for c in _list(concept.get("coding")):
        if not isinstance(c, dict):
            continue
        system, code = c.get("system"), c.get("code")
        if isinstance(system, str) and isinstance(code, str) and system and code.strip():
            out.append((system, code.strip()))
    return out


def _text(concept: object) -> str | None:
    if not isinstance(concept, dict):
        return None
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()[:200]
    for c in _list(concept.get("coding")):
        display = c.get("display") if isinstance(c, dict) else None
        if isinstance(display, str) and display.strip():
            return display.strip()[:200]
    return None


def _contrast(res: dict[str, Any]) -> bool | None:
    for ext in _list(res.get("extension")):
        if isinstance(ext, dict) and ext.get("url") == CONTRAST_EXTENSION:
            value = ext.get("valueBoolean")
            return value if isinstance(value, bool) else None
    return None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
