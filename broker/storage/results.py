"""Rows of the result index: the columns that follow the current version, and the items."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.domain.results import ExtractedResult, ResultItem
from broker.storage.protect import Protector


def current_fields(
    r: ExtractedResult, person_id: str, now: datetime, result_id: str, protector: Protector
) -> dict[str, Any]:
    """The result row's columns that follow its current version (its summary sealed)."""
    return {
        "person_id": person_id,
        "kind": r.kind.value,
        "resource_type": r.resource_type,
        "status": r.status,
        "effective": r.effective,
        "issued": r.issued,
        "summary": "",
        "clinical": protector.seal_result(result_id, r.summary[:2000]),
        "timezone_assumed": r.timezone_assumed,
        "updated_at": now,
    }


def item_rows(
    result_id: str,
    hospital: str,
    person_id: str,
    items: tuple[ResultItem, ...],
    protector: Protector,
) -> list[dict[str, Any]]:
    """One index row per item and coding (an uncoded item still gets one)."""
    rows: list[dict[str, Any]] = []
    for item in items:
        codings = item.codings
        row = _item_row(
            result_id, hospital, person_id, item, codings[0] if codings else None, protector
        )
        rows.append(row)
        # The item's other codings: the same resource key and sealed text, hashed and
        # sealed once per item rather than once per coding.
        for coding in codings[1:]:
            rows.append(
                {
                    **row,
                    "code_system": coding.system,
                    "code": coding.code,
                    "display": (coding.display or "")[:300],
                }
            )
    return rows


def _item_row(
    result_id: str,
    hospital: str,
    person_id: str,
    item: ResultItem,
    coding: Any,
    protector: Protector,
) -> dict[str, Any]:
    return {
        "result_id": result_id,
        "person_id": person_id,
        "hospital_id": hospital,
        "resource_type": item.resource_type,
        # The hospital's own resource id can embed an accession: only a keyed hash is kept
        # (it groups an item's codings back together, nothing reads it).
        "resource_id": protector.resource_key(hospital, item.resource_id),
        "code_system": coding.system if coding else None,
        "code": coding.code if coding else None,
        "display": (coding.display or "")[:300] if coding else None,
        "modality": item.modality,
        "body_site_system": item.body_site.system if item.body_site else None,
        "body_site_code": item.body_site.code if item.body_site else None,
        "laterality_code": item.laterality.code if item.laterality else None,
        "contrast": item.contrast,
        "status": item.status,
        "effective": item.effective,
        "summary": "",
        "clinical": protector.seal_item(result_id, item.summary[:2000], item.value, item.images),
        "recognition_mark": item.recognition_mark,
        "protocol": (item.protocol or "")[:32] or None,
        "unit": (item.unit or "")[:64] or None,
        "flags": ",".join(item.flags)[:64] or None,
        "no_value": (item.no_value or "")[:120] or None,
    }
