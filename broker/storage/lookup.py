"""Finding a person's indexed results for an ordered item."""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.prior_results import OrderedItem, PriorResult
from broker.storage.tables import result, result_item


async def prior_results(
    session: AsyncSession, person_id: str, item: OrderedItem
) -> list[PriorResult]:
    """Every current result of the person, from any hospital, that matches the item."""
    if item.is_imaging:
        cond = and_(result_item.c.modality.in_(item.modalities()))
        if item.body_site is not None:
            cond = and_(cond, result_item.c.body_site_code == item.body_site.code)
    else:
        cond = and_(result_item.c.code_system == item.system, result_item.c.code == item.code)
    rows = await session.execute(
        select(
            result.c.id,
            result.c.hospital_id,
            result.c.kind,
            result.c.resource_type,
            result.c.status,
            result_item.c.status,
            result_item.c.effective,
            result.c.effective,
            result_item.c.summary,
            result_item.c.display,
            result_item.c.recognition_mark,
        )
        .join(result, result.c.id == result_item.c.result_id)
        .where(result_item.c.person_id == person_id, cond)
    )
    found: dict[str, PriorResult] = {}
    for (
        rid,
        hosp,
        kind,
        rtype,
        status,
        item_status,
        item_eff,
        res_eff,
        summary,
        display,
        mark,
    ) in rows:
        found.setdefault(
            rid,
            PriorResult(
                result_id=rid,
                hospital=hosp,
                kind=kind,
                resource_type=rtype,
                status=status,
                item_status=item_status,
                effective=item_eff or res_eff,
                summary=summary,
                display=display,
                recognition_mark=mark,
            ),
        )
    return list(found.values())
