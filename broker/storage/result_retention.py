"""Retention of results (broker/domain/retention_policy.py): results past their period leave
the index and the FHIR search facade, with the payloads no other result was read from.

Removed: the result row, its versions and items (what checks read), its FHIR search rows
(`fhir_resource`, `fhir_token`: /fhir no longer finds or reads it) and each payload whose
results are all gone. Kept: ledger entries, outcomes and notices (they name the result by
id, without a foreign key: the ledger's sums do not move), checks as answered, the inbox
(so a redelivered message stays a duplicate) and the audit trail (never purged).

The scan reads `result` in primary-key order with a filter on its anchor (no index on the
anchor: each batch scans forward from the last id seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.results import Coding
from broker.ports import admin as ports
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.fhir_index import chunks
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.tables import payload, result, result_item, result_version
from broker.storage.unit_of_work import SqlUnitOfWork


def _anchor() -> ColumnElement[datetime]:
    """broker.domain.retention_policy.anchor in SQL: effective, else issued, else received."""
    return func.coalesce(result.c.effective, result.c.issued, result.c.updated_at)


async def anchored_by(
    session: AsyncSession, cutoff: datetime, *, after: str | None, limit: int
) -> list[ports.HeldResult]:
    """Up to `limit` results anchored at or before `cutoff`, after id `after`, with their
    rows."""
    query = select(
        result.c.id,
        result.c.hospital_id,
        result.c.kind,
        result.c.effective,
        result.c.issued,
        result.c.updated_at,
    ).where(_anchor() <= cutoff)
    if after is not None:
        query = query.where(result.c.id > after)
    found = (await session.execute(query.order_by(result.c.id).limit(limit))).all()
    rows = await _rows(session, [r.id for r in found])
    return [
        ports.HeldResult(
            result_id=r.id,
            hospital=r.hospital_id,
            category=r.kind,
            effective=r.effective,
            issued=r.issued,
            received=r.updated_at,
            rows=tuple(rows.get(r.id, {}).values()),
        )
        for r in found
    ]


async def _rows(
    session: AsyncSession, result_ids: list[str]
) -> dict[str, dict[tuple[str, str | None], ports.HeldRow]]:
    """Each result's items, their codings folded back together (one row per coding)."""
    out: dict[str, dict[tuple[str, str | None], ports.HeldRow]] = {}
    t = result_item.c
    for chunk in chunks(result_ids):
        query = (
            select(
                t.result_id,
                t.resource_type,
                t.resource_id,
                t.code_system,
                t.code,
                t.modality,
                t.body_site_code,
                t.protocol,
            )
            .where(t.result_id.in_(chunk))
            .order_by(t.id)
        )
        for r in await session.execute(query):
            items = out.setdefault(r.result_id, {})
            key = (r.resource_type, r.resource_id)
            coding = (Coding(r.code_system or "", r.code),) if r.code else ()
            seen = items.get(key)
            if seen is None:
                items[key] = ports.HeldRow(coding, r.modality, r.body_site_code, r.protocol)
            else:
                items[key] = ports.HeldRow(
                    seen.codings + coding, seen.modality, seen.body_site, seen.protocol
                )
    return out


async def remove_results(session: AsyncSession, result_ids: Sequence[str]) -> ports.Removed:
    """Delete these results, their versions, items and FHIR search rows, and the payloads
    left unreferenced; foreign keys first. The ids of those that were still there."""
    removed: list[str] = []
    payloads = 0
    for chunk in chunks(sorted(set(result_ids))):
        held = select(result.c.id).where(result.c.id.in_(chunk)).order_by(result.c.id)
        if session.get_bind().dialect.name == "postgresql":
            held = held.with_for_update()  # ingest updates this row for a new version
        present = [str(rid) for rid in (await session.execute(held)).scalars()]
        if not present:
            continue
        served = select(fhir_resource.c.id).where(fhir_resource.c.result_id.in_(present))
        await session.execute(delete(fhir_token).where(fhir_token.c.resource_id.in_(served)))
        await session.execute(delete(fhir_resource).where(fhir_resource.c.result_id.in_(present)))
        await session.execute(delete(result_item).where(result_item.c.result_id.in_(present)))
        read_from = (
            await session.execute(
                select(result_version.c.payload_id)
                .where(result_version.c.result_id.in_(present))
                .distinct()
            )
        ).scalars()
        payload_ids = sorted(int(p) for p in read_from)
        await session.execute(delete(result_version).where(result_version.c.result_id.in_(present)))
        if payload_ids:
            # A message can carry several results: its payload goes with the last of them.
            shared = exists().where(result_version.c.payload_id == payload.c.id)
            done: Any = await session.execute(
                delete(payload).where(payload.c.id.in_(payload_ids), ~shared)
            )
            payloads += int(getattr(done, "rowcount", 0) or 0)
        await session.execute(delete(result).where(result.c.id.in_(present)))
        removed += present
    return ports.Removed(tuple(removed), payloads)


class SqlResultRetention(ports.ResultRetention):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def anchored_by(
        self, cutoff: datetime, *, after: str | None, limit: int
    ) -> list[ports.HeldResult]:
        return await anchored_by(self._session, cutoff, after=after, limit=limit)

    async def remove(self, result_ids: Sequence[str]) -> ports.Removed:
        return await remove_results(self._session, result_ids)


class SqlResultPurgeUnitOfWork(SqlUnitOfWork, ports.ResultPurgeUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.results = SqlResultRetention(session)
        self.changes = SqlChangeLog(session)
