"""Finance and regulator reports, computed from the ledger and the recorded checks.

Every yuan figure is a sum of ledger entries (integer fen), so a report's groups add up
to its totals and its totals to the ledger, exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.actors import ALL_HOSPITALS
from broker.domain.check_items import stored_items
from broker.domain.ledger import DeclineReason, next_month, parse_month
from broker.domain.recognition import SHANGHAI
from broker.storage import hospitals as registry
from broker.storage.tables import ledger_entry, recognition_check, recognition_outcome

GroupBy = Literal["hospital", "item", "month", "category"]
GROUPS: tuple[GroupBy, ...] = ("hospital", "item", "month", "category")
CATEGORIES = ("DR", "CT", "MR", "US", "LAB", "OTHER")
REASONS = tuple(r.value for r in DeclineReason)


def yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:.2f}"


def yuan_amount(fen: int) -> Decimal:
    """The same amount as a number (for CSV: a number cell, never escaped as text)."""
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def period_bound(value: str | None) -> str | None:
    """A month ("2026-05") from a month or a day ("2026-05-20"); None stays open."""
    if value is None or value == "":
        return None
    text = value[:7] if len(value) == 10 else value
    parse_month(text)
    if len(value) == 10:
        date.fromisoformat(value)  # a malformed day is an error, not its month
    return text


@dataclass
class Figures:
    recognitions: int = 0
    saved_fen: int = 0
    reversals: int = 0
    reversed_fen: int = 0  # positive: how much was taken back
    flagged: int = 0
    declines: dict[str, int] = field(default_factory=dict)

    @property
    def net_fen(self) -> int:
        return self.saved_fen - self.reversed_fen

    @property
    def declined(self) -> int:
        return sum(self.declines.values())

    def add_entries(self, kind: str, count: int, fen: int) -> None:
        if kind == "saving":
            self.recognitions += count
            self.saved_fen += fen
        elif kind == "reversal":
            self.reversals += count
            self.reversed_fen += -fen
        elif kind == "flag":
            self.flagged += count

    def as_dict(self) -> dict[str, Any]:
        return {
            "recognitions": self.recognitions,
            "saved": yuan(self.saved_fen),
            "reversals": self.reversals,
            "reversed": yuan(self.reversed_fen),
            "net_saved": yuan(self.net_fen),
            "flagged": self.flagged,
            "declined": self.declined,
            "declines_by_reason": dict(sorted(self.declines.items())),
        }


@dataclass
class SavingsReport:
    group_by: GroupBy
    period_from: str | None
    period_to: str | None
    hospital: str | None  # the scope, None = every hospital
    rows: dict[str, Figures]
    totals: Figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "from": self.period_from,
            "to": self.period_to,
            "hospital": self.hospital,
            "currency": "CNY",
            "groups": [{"key": k, **f.as_dict()} for k, f in sorted(self.rows.items())],
            "totals": self.totals.as_dict(),
        }

    def as_csv(self) -> str:
        return _csv(
            [self.group_by, *_FIGURE_COLUMNS],
            [[k, *_figure_cells(f)] for k, f in sorted(self.rows.items())]
            + [["TOTAL", *_figure_cells(self.totals)]],
        )


_FIGURE_COLUMNS = [
    "recognitions",
    "saved",
    "reversals",
    "reversed",
    "net_saved",
    "flagged",
    "declined",
    *(f"declined_{r}" for r in REASONS),
]


def _figure_cells(f: Figures) -> list[object]:
    return [
        f.recognitions,
        yuan_amount(f.saved_fen),
        f.reversals,
        yuan_amount(f.reversed_fen),
        yuan_amount(f.net_fen),
        f.flagged,
        f.declined,
        *(f.declines.get(r, 0) for r in REASONS),
    ]


# A spreadsheet reads a cell starting with one of these as a formula (OWASP: CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell that would start a formula gets a leading single quote, so spreadsheets
    show it as text; numbers (int, Decimal: e.g. a negative net saving) stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(h) for h in header])
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)
    return out.getvalue()


def _ledger_key(group_by: GroupBy) -> ColumnElement[Any]:
    return {
        "hospital": ledger_entry.c.ordering_hospital,
        "item": ledger_entry.c.catalog_code,
        "month": ledger_entry.c.period,
        "category": ledger_entry.c.category,
    }[group_by]


def _outcome_key(group_by: GroupBy) -> ColumnElement[Any]:
    return {
        "hospital": recognition_outcome.c.hospital_id,
        "item": recognition_outcome.c.catalog_code,
        "month": recognition_outcome.c.period,
        "category": recognition_outcome.c.category,
    }[group_by]


def _in_range(
    column: ColumnElement[Any], period_from: str | None, period_to: str | None
) -> list[ColumnElement[bool]]:
    where = []
    if period_from:
        where.append(column >= period_from)
    if period_to:
        where.append(column <= period_to)
    return where


async def savings(
    session: AsyncSession,
    group_by: GroupBy,
    *,
    period_from: str | None = None,
    period_to: str | None = None,
    hospital: str | None = None,
) -> SavingsReport:
    """Savings per group over booked months [from, to]; `hospital` limits to one orderer."""
    scope = None if hospital in (None, ALL_HOSPITALS) else hospital
    ledger_where = _in_range(ledger_entry.c.period, period_from, period_to)
    outcome_where = [
        recognition_outcome.c.outcome == "declined",
        *_in_range(recognition_outcome.c.period, period_from, period_to),
    ]
    if scope:
        ledger_where.append(ledger_entry.c.ordering_hospital == scope)
        outcome_where.append(recognition_outcome.c.hospital_id == scope)
    rows: dict[str, Figures] = {}
    key = _ledger_key(group_by)
    for k, kind, count, fen in await session.execute(
        select(key, ledger_entry.c.kind, func.count(), func.sum(ledger_entry.c.amount_fen))
        .where(*ledger_where)
        .group_by(key, ledger_entry.c.kind)
    ):
        rows.setdefault(k or "-", Figures()).add_entries(kind, count, int(fen or 0))
    okey = _outcome_key(group_by)
    for k, reason, count in await session.execute(
        select(okey, recognition_outcome.c.reason, func.count())
        .where(*outcome_where)
        .group_by(okey, recognition_outcome.c.reason)
    ):
        figures = rows.setdefault(k or "-", Figures())
        figures.declines[reason] = figures.declines.get(reason, 0) + count
    # Totals straight from the ledger, not from the groups: the two must agree.
    totals = Figures()
    for kind, count, fen in await session.execute(
        select(ledger_entry.c.kind, func.count(), func.sum(ledger_entry.c.amount_fen))
        .where(*ledger_where)
        .group_by(ledger_entry.c.kind)
    ):
        totals.add_entries(kind, count, int(fen or 0))
    for reason, count in await session.execute(
        select(recognition_outcome.c.reason, func.count())
        .where(*outcome_where)
        .group_by(recognition_outcome.c.reason)
    ):
        totals.declines[reason] = count
    return SavingsReport(group_by, period_from, period_to, scope, rows, totals)


# -- the provincial regulator's monthly report ------------------------------------------


@dataclass
class Activity(Figures):
    lookups: int = 0  # ordered items checked
    cross_hospital_lookups: int = 0  # ... that found a result from another hospital
    recognizable: int = 0  # ... that the rules found recognisable

    def as_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "cross_hospital_lookups": self.cross_hospital_lookups,
            "recognizable": self.recognizable,
            **super().as_dict(),
        }


_ACTIVITY_COLUMNS = ["lookups", "cross_hospital_lookups", "recognizable", *_FIGURE_COLUMNS]


def _activity_cells(a: Activity) -> list[object]:
    return [a.lookups, a.cross_hospital_lookups, a.recognizable, *_figure_cells(a)]


@dataclass
class RegulatorReport:
    month: str
    hospitals: list[registry.Hospital]
    by_hospital: dict[str, Activity]
    by_category: dict[str, Activity]
    certified: list[dict[str, str]]
    totals: Activity

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "currency": "CNY",
            "hospitals": [
                {
                    "hospital": h.id,
                    "name": h.name,
                    "region": h.region,
                    "level": h.level,
                    "grade": h.grade,
                    "ownership": h.ownership,
                    "eqa_certifications": sum(1 for c in self.certified if c["hospital"] == h.id),
                    **self.by_hospital[h.id].as_dict(),
                }
                for h in self.hospitals
            ],
            "categories": [{"category": c, **self.by_category[c].as_dict()} for c in CATEGORIES],
            "certifications": self.certified,
            "totals": self.totals.as_dict(),
        }

    def as_csv(self) -> str:
        header = ["section", "key", "name", "region", "level", "grade", "ownership"]
        rows: list[list[object]] = []
        for h in self.hospitals:
            rows.append(
                [
                    "hospital",
                    h.id,
                    h.name,
                    h.region,
                    h.level,
                    h.grade or "",
                    h.ownership,
                    *_activity_cells(self.by_hospital[h.id]),
                ]
            )
        for c in CATEGORIES:
            rows.append(["category", c, "", "", "", "", "", *_activity_cells(self.by_category[c])])
        rows.append(["total", "", "", "", "", "", "", *_activity_cells(self.totals)])
        return _csv(header + _ACTIVITY_COLUMNS, rows)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in China Standard Time."""
    year, m = parse_month(month)
    ny, nm = parse_month(next_month(month))
    start = datetime.combine(date(year, m, 1), time(), SHANGHAI)
    return start, datetime.combine(date(ny, nm, 1), time(), SHANGHAI)


async def regulator(session: AsyncSession, month: str) -> RegulatorReport:
    start, end = month_bounds(month)
    hospitals = await registry.list_all(session)
    by_hospital = {h.id: Activity() for h in hospitals}
    by_category = {c: Activity() for c in CATEGORIES}
    totals = Activity()

    def targets(hospital: str | None, category: str | None) -> list[Activity]:
        out = [totals, by_category[category if category in by_category else "OTHER"]]
        if hospital in by_hospital:
            out.append(by_hospital[hospital])
        return out

    checks = await session.execute(
        select(recognition_check.c.ordering_hospital, recognition_check.c["items"]).where(
            recognition_check.c.created_at >= start, recognition_check.c.created_at < end
        )
    )
    for ordering, items in checks:
        for item in stored_items(items):
            for a in targets(ordering, item.category):
                a.lookups += 1
                a.cross_hospital_lookups += bool(item.hospitals_found() - {ordering})
                a.recognizable += item.recognizable
    for hospital, category, kind, count, fen in await session.execute(
        select(
            ledger_entry.c.ordering_hospital,
            ledger_entry.c.category,
            ledger_entry.c.kind,
            func.count(),
            func.sum(ledger_entry.c.amount_fen),
        )
        .where(ledger_entry.c.period == month)
        .group_by(ledger_entry.c.ordering_hospital, ledger_entry.c.category, ledger_entry.c.kind)
    ):
        for a in targets(hospital, category):
            a.add_entries(kind, count, int(fen or 0))
    for hospital, category, reason, count in await session.execute(
        select(
            recognition_outcome.c.hospital_id,
            recognition_outcome.c.category,
            recognition_outcome.c.reason,
            func.count(),
        )
        .where(recognition_outcome.c.outcome == "declined", recognition_outcome.c.period == month)
        .group_by(
            recognition_outcome.c.hospital_id,
            recognition_outcome.c.category,
            recognition_outcome.c.reason,
        )
    ):
        for a in targets(hospital, category):
            a.declines[reason] = a.declines.get(reason, 0) + count
    first, last = start.date(), (end - timedelta(days=1)).date()
    certified = [
        {
            "hospital": c.hospital,
            "scope": c.scope,
            "body": c.body.value,
            "valid_from": c.valid_from.isoformat(),
            "valid_to": c.valid_to.isoformat(),
        }
        for c in await registry.certifications(session)
        if c.valid_from <= last and c.valid_to >= first
    ]
    return RegulatorReport(month, hospitals, by_hospital, by_category, certified, totals)
