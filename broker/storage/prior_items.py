"""Reading a person's indexed results for the recognition rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import replace
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, String, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.recognition import IMAGING_ROW_TYPES, PriorItem, RowFilter
from broker.domain.results import Coding
from broker.storage.people import with_merged
from broker.storage.protect import Protector
from broker.storage.tables import result, result_item

# Given the items read (their sealed values and summaries not opened yet), the results
# whose items are wanted (broker.domain.recognition.results_that_matter).
Matters = Callable[[Sequence[PriorItem]], Set[str]]


ITEM_COLUMNS = (
    result_item.c.result_id,
    result.c.hospital_id,
    result.c.kind,
    result_item.c.resource_type,
    result_item.c.resource_id,
    result.c.status,
    result_item.c.status.label("item_status"),
    result_item.c.effective,
    result.c.effective.label("result_effective"),
    result_item.c.summary,
    result_item.c.code_system,
    result_item.c.code,
    result_item.c.display,
    result_item.c.modality,
    result_item.c.body_site_code,
    result_item.c.laterality_code,
    result_item.c.contrast,
    result_item.c.recognition_mark,
    result_item.c.protocol,
    result_item.c.clinical,
    result_item.c.unit,
    result_item.c.flags,
    result_item.c.no_value,
    result.c.updated_at,
    result.c.resource_type.label("main_type"),
)


def items_of(
    people: CompoundSelect[tuple[str]], filtered: bool, by_code: bool, imaging: bool
) -> ColumnElement[bool]:
    """Which result_item rows are read: those of `people`, all of them or (`filtered`)
    those of the results holding a row coded with one of :codes, or (with `imaging`) a
    study or report row."""
    where: ColumnElement[bool] = result_item.c.person_id.in_(people)
    if filtered:
        admitted = []
        if by_code:
            admitted.append(result_item.c.code.in_(bindparam("codes", expanding=True)))
        if imaging:
            admitted.append(result_item.c.resource_type.in_(IMAGING_ROW_TYPES))
        holding = select(result_item.c.result_id).where(
            result_item.c.person_id.in_(people), or_(*admitted)
        )
        where = and_(where, result_item.c.result_id.in_(holding))
    return where


@lru_cache(maxsize=8)
def _items(filtered: bool, by_code: bool, imaging: bool) -> Select[Any]:
    """The read of a person's items, built once per shape (building the expression per
    request cost more than running it)."""
    people = with_merged(bindparam("person_id", type_=String(36)))
    return (
        select(*ITEM_COLUMNS)
        .join(result, result.c.id == result_item.c.result_id)
        .where(items_of(people, filtered, by_code, imaging))
        .order_by(result_item.c.id)
    )


def item_params(rows: RowFilter | None) -> tuple[tuple[bool, bool, bool], dict[str, Any]]:
    """The shape of the read for `rows` (filtered, by code, imaging) and its :codes."""
    codes = sorted(rows.codes) if rows is not None else []
    imaging = rows is not None and rows.imaging
    return (rows is not None, bool(codes), imaging), ({"codes": codes} if codes else {})


async def person_items(
    session: AsyncSession,
    person_id: str,
    protector: Protector,
    matters: Matters | None = None,
    rows: RowFilter | None = None,
) -> list[PriorItem]:
    """The items of the person's current results, from every hospital: all of them, or
    those of the results `matters` keeps.

    One person has tens to a few hundred items, so the rules get them and do the matching
    (LOINC, local codes, modality and body site) in pure code. Opening each item's sealed
    value and summary is most of the cost, so only the items kept are opened. With `rows`,
    only the results holding a row it admits are read (a patient with hundreds of results
    costs about what one with ten does).
    """
    if rows is not None and rows.empty:
        return []
    shape, params = item_params(rows)
    found = await session.execute(_items(*shape), {"person_id": person_id, **params})
    return prior_items_of(found, protector, matters)


def prior_items_of(
    found: Iterable[Any], protector: Protector, matters: Matters | None = None
) -> list[PriorItem]:
    """The prior items of the rows read (ITEM_COLUMNS, ordered by item): each item folded
    with its codings, and only those of the results `matters` keeps opened."""
    merged: dict[tuple[str, str, str | None], PriorItem] = {}
    sealed: dict[tuple[str, str, str | None], tuple[bytes | None, str]] = {}
    for r in found:
        # One item is stored once per coding; fold them back into one with all codings.
        key = (r.result_id, r.resource_type, r.resource_id)
        coding = (Coding(r.code_system or "", r.code, r.display),) if r.code else ()
        seen = merged.get(key)
        if seen is not None:
            merged[key] = replace(seen, codings=seen.codings + coding)
            continue
        sealed[key] = (r.clinical, r.summary)
        merged[key] = PriorItem(
            result_id=r.result_id,
            hospital=r.hospital_id,
            result_kind=r.kind,
            resource_type=r.resource_type,
            result_status=r.status,
            status=r.item_status,
            effective=r.effective or r.result_effective,
            summary="",
            codings=coding,
            modality=r.modality,
            body_site=r.body_site_code,
            laterality=r.laterality_code,
            contrast=r.contrast,
            recognition_mark=r.recognition_mark,
            protocol=r.protocol,
            unit=r.unit,
            flags=tuple(f for f in (r.flags or "").split(",") if f),
            no_value=r.no_value,
            result_version=r.updated_at.isoformat(),
            # The result's main resource: /fhir serves a report's members under ids
            # derived from the hospital's own resource ids, which the index keeps only hashed.
            fhir_ref=f"{r.main_type}/{r.result_id}",
        )
    keep = matters(list(merged.values())) if matters is not None else None
    out: list[PriorItem] = []
    for key, item in merged.items():
        if keep is not None and item.result_id not in keep:
            continue
        opened = protector.open_item_fields(item.result_id, *sealed[key])
        value, images = opened.get("value"), opened.get("images")
        out.append(
            replace(
                item,
                summary=str(opened.get("summary") or ""),
                value=None if value is None else str(value),
                images=images if isinstance(images, str) and images else None,
            )
        )
    return out
