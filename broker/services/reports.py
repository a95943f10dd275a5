"""Finance and regulator reports, computed from the ledger and the recorded checks.

Every yuan figure is a sum of ledger entries (integer fen), so a report's groups add up
to its totals and its totals to the ledger, exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from broker.domain.actors import ALL_HOSPITALS
from broker.domain.ledger import DeclineReason, next_month, parse_month
from broker.domain.recognition import SHANGHAI
from broker.domain.registry import HospitalProfile
from broker.ports.reports import (
    DeclineCount,
    LedgerSum,
    OrderedCheck,
    ReportFigures,
    Side,
    Window,
)

# hospital: the ordering hospital; source: the hospital whose result was recognised.
GroupBy = Literal["hospital", "source", "item", "month", "category"]
GROUPS: tuple[GroupBy, ...] = ("hospital", "source", "item", "month", "category")
SIDES: tuple[Side, ...] = ("ordering", "source")
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
    side: Side = "ordering"  # which side of a recognition `hospital` names

    def as_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "from": self.period_from,
            "to": self.period_to,
            "hospital": self.hospital,
            "side": self.side,
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


async def savings(
    figures: ReportFigures,
    group_by: GroupBy,
    *,
    period_from: str | None = None,
    period_to: str | None = None,
    hospital: str | None = None,
    side: Side = "ordering",
) -> SavingsReport:
    """Savings per group over booked months [from, to]; `hospital` limits to one hospital:
    the one that ordered, or with side="source" the one whose results were recognised (the
    savings it enabled elsewhere; declines are counted on the ordering side only)."""
    scope = None if hospital in (None, ALL_HOSPITALS) else hospital
    window = Window(period_from, period_to, scope, side)
    return savings_report(
        group_by,
        window,
        groups=await figures.ledger_sums([group_by], window),
        group_declines=await figures.decline_counts([group_by], window),
        totals=await figures.ledger_sums([], window),
        total_declines=await figures.decline_counts([], window),
    )


def savings_report(
    group_by: GroupBy,
    window: Window,
    *,
    groups: Iterable[LedgerSum],
    group_declines: Iterable[DeclineCount],
    totals: Iterable[LedgerSum],
    total_declines: Iterable[DeclineCount],
) -> SavingsReport:
    """The report from per-group and overall figures; a group without a key is "-"."""
    rows: dict[str, Figures] = {}
    for s in groups:
        rows.setdefault(s.key[0] or "-", Figures()).add_entries(s.kind, s.count, s.fen)
    for d in group_declines:
        figures = rows.setdefault(d.key[0] or "-", Figures())
        figures.declines[d.reason] = figures.declines.get(d.reason, 0) + d.count
    # Totals straight from the ledger, not from the groups: the two must agree.
    overall = Figures()
    for s in totals:
        overall.add_entries(s.kind, s.count, s.fen)
    for d in total_declines:
        overall.declines[d.reason] = d.count
    return SavingsReport(
        group_by, window.period_from, window.period_to, window.hospital, rows, overall, window.side
    )


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
    hospitals: list[HospitalProfile]
    by_hospital: dict[str, Activity]
    by_category: dict[str, Activity]
    certified: list[dict[str, str]]
    totals: Activity
    # The other side: what each hospital's results saved at the hospitals that recognised
    # them (a hospital that orders nothing can still have saved others a great deal).
    enabled: dict[str, Figures] = field(default_factory=dict)

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
                    "enabled_elsewhere": _enabled_dict(self.enabled.get(h.id, Figures())),
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
                    *_enabled_cells(self.enabled.get(h.id, Figures())),
                ]
            )
        blank = [""] * len(_ENABLED_COLUMNS)
        for c in CATEGORIES:
            rows.append(
                ["category", c, "", "", "", "", "", *_activity_cells(self.by_category[c]), *blank]
            )
        rows.append(["total", "", "", "", "", "", "", *_activity_cells(self.totals), *blank])
        return _csv(header + _ACTIVITY_COLUMNS + _ENABLED_COLUMNS, rows)


_ENABLED_COLUMNS = [
    "its_results_recognised",
    "its_recognitions_reversed",
    "saved_for_others",
    "reversed_for_others",
    "net_saved_for_others",
]


def _enabled_dict(f: Figures) -> dict[str, Any]:
    return dict(zip(_ENABLED_COLUMNS, _enabled_cells(f), strict=True))


def _enabled_cells(f: Figures) -> list[object]:
    return [f.recognitions, f.reversals, yuan(f.saved_fen), yuan(f.reversed_fen), yuan(f.net_fen)]


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in China Standard Time."""
    year, m = parse_month(month)
    ny, nm = parse_month(next_month(month))
    start = datetime.combine(date(year, m, 1), time(), SHANGHAI)
    return start, datetime.combine(date(ny, nm, 1), time(), SHANGHAI)


async def regulator(figures: ReportFigures, month: str) -> RegulatorReport:
    start, end = month_bounds(month)
    window = Window(month, month)
    return regulator_report(
        month,
        hospitals=await figures.hospitals(),
        checks=await figures.checks(start, end),
        ledger=await figures.ledger_sums(["hospital", "category"], window),
        declines=await figures.decline_counts(["hospital", "category"], window),
        enabled=await figures.ledger_sums(["source"], window),
    )


def regulator_report(
    month: str,
    *,
    hospitals: Mapping[str, HospitalProfile],
    checks: Iterable[OrderedCheck],
    ledger: Iterable[LedgerSum],
    declines: Iterable[DeclineCount],
    enabled: Iterable[LedgerSum] = (),
) -> RegulatorReport:
    """The month's return from its checks, its ledger and declines by (hospital, category),
    and the certifications valid on any day of the month."""
    start, end = month_bounds(month)
    by_hospital = {h: Activity() for h in hospitals}
    by_category = {c: Activity() for c in CATEGORIES}
    totals = Activity()

    def targets(hospital: str | None, category: str | None) -> list[Activity]:
        out = [totals, by_category[category if category in by_category else "OTHER"]]
        if hospital in by_hospital:
            out.append(by_hospital[hospital])
        return out

    for check in checks:
        ordering = check.ordering_hospital
        for item in check.items:
            for a in targets(ordering, item.category):
                a.lookups += 1
                a.cross_hospital_lookups += bool(item.hospitals_found() - {ordering})
                a.recognizable += item.recognizable
    for s in ledger:
        for a in targets(*s.key):
            a.add_entries(s.kind, s.count, s.fen)
    for d in declines:
        for a in targets(*d.key):
            a.declines[d.reason] = a.declines.get(d.reason, 0) + d.count
    first, last = start.date(), (end - timedelta(days=1)).date()
    certified = [
        {
            "hospital": c.hospital,
            "scope": c.scope,
            "body": c.body.value,
            "valid_from": c.valid_from.isoformat(),
            "valid_to": c.valid_to.isoformat(),
        }
        for h in hospitals.values()
        for c in h.certifications
        if c.valid_from <= last and c.valid_to >= first
    ]
    by_source: dict[str, Figures] = {}
    for s in enabled:
        if s.key[0] is not None:
            by_source.setdefault(s.key[0], Figures()).add_entries(s.kind, s.count, s.fen)
    return RegulatorReport(
        month, list(hospitals.values()), by_hospital, by_category, certified, totals, by_source
    )
