"""The result index: one row per result, every version kept, items for look-up."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.results import ExtractedResult, ResultItem
from broker.domain.versions import StoredVersion, VersionKey, VersionOutcome, place_version
from broker.storage.tables import result, result_item, result_version


class Results:
    """Writes versions of results following DESIGN.md's identity and ordering rules."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def store(
        self,
        r: ExtractedResult,
        *,
        hospital: str,
        person_id: str,
        message_id: str,
        payload_id: int,
        received_at: datetime,
    ) -> VersionOutcome:
        """Store one version; return whether it became current, was older, or a replay."""
        rows = (
            await self._session.execute(
                select(
                    result.c.id,
                    result_version.c.source_time,
                    result_version.c.version_number,
                    result_version.c.content_hash,
                    result_version.c.is_current,
                )
                .join(result_version, result_version.c.result_id == result.c.id)
                .where(result.c.hospital_id == hospital, result.c.business_id == r.business_id)
            )
        ).all()
        if not rows:
            result_id = str(uuid.uuid4())
            await self._session.execute(
                result.insert(),
                dict(
                    id=result_id,
                    hospital_id=hospital,
                    business_id=r.business_id,
                    **self._current_fields(r, person_id, received_at),
                ),
            )
            outcome = VersionOutcome.CURRENT
        else:
            result_id = rows[0][0]
            stored = [StoredVersion(VersionKey(t, n), h, c) for _, t, n, h, c in rows]
            outcome = place_version(r.version, r.content_hash, stored)
            if outcome is VersionOutcome.DUPLICATE:
                return outcome
            if outcome is VersionOutcome.CURRENT:
                await self._session.execute(
                    update(result_version)
                    .where(result_version.c.result_id == result_id)
                    .values(is_current=False)
                )
                await self._session.execute(
                    update(result)
                    .where(result.c.id == result_id)
                    .values(**self._current_fields(r, person_id, received_at))
                )
        is_current = outcome is VersionOutcome.CURRENT
        await self._session.execute(
            result_version.insert(),
            dict(
                result_id=result_id,
                message_id=message_id,
                payload_id=payload_id,
                source_time=r.version.source_time,
                version_number=r.version.version_number,
                version_label=r.version_label,
                content_hash=r.content_hash,
                status=r.status,
                is_current=is_current,
                received_at=received_at,
            ),
        )
        if is_current:
            await self._replace_items(result_id, hospital, person_id, r.items, fresh=not rows)
        return outcome

    @staticmethod
    def _current_fields(r: ExtractedResult, person_id: str, now: datetime) -> dict[str, Any]:
        return current_fields(r, person_id, now)

    async def _replace_items(
        self,
        result_id: str,
        hospital: str,
        person_id: str,
        items: tuple[ResultItem, ...],
        *,
        fresh: bool,
    ) -> None:
        if not fresh:
            await self._session.execute(
                delete(result_item).where(result_item.c.result_id == result_id)
            )
        rows = item_rows(result_id, hospital, person_id, items)
        if rows:
            await self._session.execute(result_item.insert(), rows)


def current_fields(r: ExtractedResult, person_id: str, now: datetime) -> dict[str, Any]:
    """The result row's columns that follow its current version."""
    return {
        "person_id": person_id,
        "kind": r.kind.value,
        "resource_type": r.resource_type,
        "status": r.status,
        "effective": r.effective,
        "issued": r.issued,
        "summary": r.summary[:2000],
        "timezone_assumed": r.timezone_assumed,
        "updated_at": now,
    }


def item_rows(
    result_id: str, hospital: str, person_id: str, items: tuple[ResultItem, ...]
) -> list[dict[str, Any]]:
    """One index row per item and coding (an uncoded item still gets one)."""
    return [
        _item_row(result_id, hospital, person_id, item, coding)
        for item in items
        for coding in (item.codings or (None,))
    ]


def _item_row(
    result_id: str, hospital: str, person_id: str, item: ResultItem, coding: Any
) -> dict[str, Any]:
    return {
        "result_id": result_id,
        "person_id": person_id,
        "hospital_id": hospital,
        "resource_type": item.resource_type,
        "resource_id": item.resource_id,
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
        "summary": item.summary[:2000],
        "recognition_mark": item.recognition_mark,
    }


async def count_results(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(result))).scalar_one())
