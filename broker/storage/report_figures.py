"""The reports' figures from the ledger, the outcomes and the checks (SQL aggregates)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.check_items import stored_items
from broker.domain.registry import HospitalProfile
from broker.ports.reports import (
    DeclineCount,
    Dimension,
    LedgerSum,
    OrderedCheck,
    ReportFigures,
    Window,
)
from broker.storage import hospitals
from broker.storage.tables import ledger_entry, recognition_check, recognition_outcome

_LEDGER: dict[Dimension, str] = {
    "hospital": "ordering_hospital",
    "source": "source_hospital",
    "item": "catalog_code",
    "month": "period",
    "category": "category",
}
_OUTCOME: dict[Dimension, str] = {
    "hospital": "hospital_id",
    "item": "catalog_code",
    "month": "period",
    "category": "category",
}


def _where(table: Table, columns: dict[Dimension, str], w: Window) -> list[ColumnElement[bool]]:
    period = table.c[columns["month"]]
    hospital = table.c[columns["source" if w.side == "source" else "hospital"]]
    where = []
    if w.period_from:
        where.append(period >= w.period_from)
    if w.period_to:
        where.append(period <= w.period_to)
    if w.hospital:
        where.append(hospital == w.hospital)
    return where


class SqlReportFigures(ReportFigures):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ledger_sums(self, by: Sequence[Dimension], window: Window) -> list[LedgerSum]:
        keys: list[ColumnElement[Any]] = [ledger_entry.c[_LEDGER[d]] for d in by]
        e = ledger_entry.c
        rows = await self._session.execute(
            select(
                *keys,
                e.kind,
                func.count(),
                func.sum(e.amount_fen),
                func.count(e.fund_fen),  # entries with a split (NULL: no ratio given)
                func.sum(e.fund_fen),
                func.sum(e.patient_fen),
            )
            .where(*_where(ledger_entry, _LEDGER, window))
            .group_by(*keys, e.kind)
        )
        n = len(keys)
        return [
            LedgerSum(
                tuple(r[:n]),
                r[n],
                r[n + 1],
                int(r[n + 2] or 0),
                split_count=int(r[n + 3] or 0),
                fund_fen=int(r[n + 4] or 0),
                patient_fen=int(r[n + 5] or 0),
            )
            for r in rows
        ]

    async def decline_counts(self, by: Sequence[Dimension], window: Window) -> list[DeclineCount]:
        if window.side == "source" or "source" in by:
            return []  # a decline is the ordering side's act: outcomes have no source column
        keys: list[ColumnElement[Any]] = [recognition_outcome.c[_OUTCOME[d]] for d in by]
        rows = await self._session.execute(
            select(*keys, recognition_outcome.c.reason, func.count())
            .where(
                recognition_outcome.c.outcome == "declined",
                *_where(recognition_outcome, _OUTCOME, window),
            )
            .group_by(*keys, recognition_outcome.c.reason)
        )
        n = len(keys)
        return [DeclineCount(tuple(r[:n]), r[n], r[n + 1]) for r in rows]

    async def checks(self, start: datetime, end: datetime) -> list[OrderedCheck]:
        rows = await self._session.execute(
            select(recognition_check.c.ordering_hospital, recognition_check.c["items"]).where(
                recognition_check.c.created_at >= start, recognition_check.c.created_at < end
            )
        )
        return [OrderedCheck(ordering, tuple(stored_items(items))) for ordering, items in rows]

    async def hospitals(self) -> Mapping[str, HospitalProfile]:
        return await hospitals.profiles(self._session)
