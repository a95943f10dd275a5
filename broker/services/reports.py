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
from broker.services import xlsx

# hospital: the ordering hospital; source: the hospital whose result was recognised.
GroupBy = Literal["hospital", "source", "item", "month", "category"]
GROUPS: tuple[GroupBy, ...] = ("hospital", "source", "item", "month", "category")
SIDES: tuple[Side, ...] = ("ordering", "source")
CATEGORIES = ("DR", "CT", "MR", "US", "LAB", "OTHER")
REASONS = tuple(r.value for r in DeclineReason)


def yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:.2f}"


def _maybe_yuan(fen: int | None) -> str | None:
    return None if fen is None else yuan(fen)


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
    # Who would have paid the net saving, over the savings and reversals whose split was
    # fixed when booked (the catalog gave a reimbursement ratio): the medical-insurance
    # fund and the patient, net of reversals.
    split_entries: int = 0
    fund_fen: int = 0
    patient_fen: int = 0

    @property
    def net_fen(self) -> int:
        return self.saved_fen - self.reversed_fen

    @property
    def fund_share_fen(self) -> int | None:
        """The fund's share of the net saving; None when no entry gave a ratio."""
        return self.fund_fen if self.split_entries else None

    @property
    def patient_share_fen(self) -> int | None:
        return self.patient_fen if self.split_entries else None

    @property
    def not_split_fen(self) -> int:
        """The part of the net saving booked without a ratio (fund + patient + this = net)."""
        return self.net_fen - self.fund_fen - self.patient_fen

    @property
    def declined(self) -> int:
        return sum(self.declines.values())

    def add_entries(
        self,
        kind: str,
        count: int,
        fen: int,
        *,
        split_count: int = 0,
        fund_fen: int = 0,
        patient_fen: int = 0,
    ) -> None:
        if kind == "saving":
            self.recognitions += count
            self.saved_fen += fen
        elif kind == "reversal":
            self.reversals += count
            self.reversed_fen += -fen
        else:
            if kind == "flag":
                self.flagged += count
            return  # a flag moves no money: its split (0 / 0) counts for nothing
        self.split_entries += split_count
        self.fund_fen += fund_fen
        self.patient_fen += patient_fen

    def add_sum(self, s: LedgerSum) -> None:
        self.add_entries(
            s.kind,
            s.count,
            s.fen,
            split_count=s.split_count,
            fund_fen=s.fund_fen,
            patient_fen=s.patient_fen,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "recognitions": self.recognitions,
            "saved": yuan(self.saved_fen),
            "reversals": self.reversals,
            "reversed": yuan(self.reversed_fen),
            "net_saved": yuan(self.net_fen),
            "fund_share": _maybe_yuan(self.fund_share_fen),
            "patient_share": _maybe_yuan(self.patient_share_fen),
            "share_not_given": yuan(self.not_split_fen),
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

    def as_xlsx(self) -> bytes:
        """The same table as the CSV (amounts as numbers, months as dates) and the scope."""

        def key(k: str) -> xlsx.Cell:
            return (xlsx.Month.parse(k) or k) if self.group_by == "month" else k

        table = [[key(k), *_xlsx_cells(f)] for k, f in sorted(self.rows.items())]
        table.append(["合计 TOTAL", *_xlsx_cells(self.totals)])
        about: list[list[xlsx.Cell]] = [
            ["group_by", self.group_by],
            ["hospital", self.hospital or "全部 all"],
            ["side", self.side],
            ["from", _month_cell(self.period_from)],
            ["to", _month_cell(self.period_to)],
            ["currency", "CNY"],
        ]
        return xlsx.workbook(
            [
                xlsx.Sheet("节省 savings", [self.group_by, *_FIGURE_COLUMNS], table, LABELS),
                xlsx.Sheet("范围 scope", ["field", "value"], about, _ABOUT_LABELS),
            ]
        )


_FIGURE_COLUMNS = [
    "recognitions",
    "saved",
    "reversals",
    "reversed",
    "net_saved",
    "fund_share",
    "patient_share",
    "share_not_given",
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
        _maybe_amount(f.fund_share_fen),
        _maybe_amount(f.patient_share_fen),
        yuan_amount(f.not_split_fen),
        f.flagged,
        f.declined,
        *(f.declines.get(r, 0) for r in REASONS),
    ]


def _maybe_amount(fen: int | None) -> Decimal | None:
    """An amount as a number, or None (an empty CSV cell) when it cannot be stated."""
    return None if fen is None else yuan_amount(fen)


def _xlsx_cells(f: Figures) -> list[xlsx.Cell]:
    return [xlsx.NOT_GIVEN_CELL if c is None else _as_cell(c) for c in _figure_cells(f)]


def _as_cell(value: object) -> xlsx.Cell:
    assert isinstance(value, str | int | Decimal), value
    return value


def _month_cell(period: str | None) -> xlsx.Cell:
    return (xlsx.Month.parse(period) or period) if period else None


# Chinese column headers of the .xlsx exports (the second header row keeps these keys).
_REASON_ZH = {
    "CONDITION_CHANGED": "病情变化",
    "RAPID_CHANGE": "结果变化快",
    "KEY_DECISION": "重大诊疗前",
    "EMERGENCY": "急诊急救",
    "FORENSIC_ASSESSMENT": "司法/伤残鉴定",
    "PATIENT_REQUEST": "患者要求",
    "QUALITY_DOUBT": "质量存疑",
    "OTHER": "其他",
    "UNKNOWN": "未说明理由",
}
LABELS: dict[str, str] = {
    "hospital": "医院",
    "source": "结果来源医院",
    "item": "项目",
    "month": "月份",
    "category": "类别",
    "recognitions": "互认次数",
    "saved": "节省金额(元)",
    "reversals": "冲销次数",
    "reversed": "冲销金额(元)",
    "net_saved": "净节省(元)",
    "fund_share": "基金支付(元)",
    "patient_share": "个人自付(元)",
    "share_not_given": "未给出比例(元)",
    "flagged": "待复核",
    "declined": "未互认次数",
    **{f"declined_{r}": f"未互认:{_REASON_ZH.get(r, r)}" for r in REASONS},
    "section": "部分",
    "key": "编码",
    "name": "名称",
    "region": "行政区划",
    "level": "级别",
    "grade": "等次",
    "ownership": "所有制",
    "lookups": "查询项目数",
    "cross_hospital_lookups": "查到他院结果数",
    "recognizable": "可互认数",
    "its_results_recognised": "本院结果被互认次数",
    "its_recognitions_reversed": "本院结果互认被冲销次数",
    "saved_for_others": "为他院节省(元)",
    "reversed_for_others": "为他院冲销(元)",
    "net_saved_for_others": "为他院净节省(元)",
    "scope": "资质范围",
    "body": "认证机构",
    "valid_from": "有效期起",
    "valid_to": "有效期止",
}
_ABOUT_LABELS = {"field": "项", "value": "值"}


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
        rows.setdefault(s.key[0] or "-", Figures()).add_sum(s)
    for d in group_declines:
        figures = rows.setdefault(d.key[0] or "-", Figures())
        figures.declines[d.reason] = figures.declines.get(d.reason, 0) + d.count
    # Totals straight from the ledger, not from the groups: the two must agree.
    overall = Figures()
    for s in totals:
        overall.add_sum(s)
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

    def _table(self) -> tuple[list[str], list[list[object]]]:
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
        return header + _ACTIVITY_COLUMNS + _ENABLED_COLUMNS, rows

    def as_csv(self) -> str:
        header, rows = self._table()
        return _csv(header, rows)

    def as_xlsx(self) -> bytes:
        """The CSV's table (amounts as numbers; a share without a ratio reads 未给出) and the
        month's certifications with their dates as dates."""
        header, rows = self._table()
        shares = {header.index("fund_share"), header.index("patient_share")}
        table = [
            [
                xlsx.NOT_GIVEN_CELL if cell is None and i in shares else _as_cell_or_blank(cell)
                for i, cell in enumerate(row)
            ]
            for row in rows
        ]
        certs: list[list[xlsx.Cell]] = [
            [
                c["hospital"],
                c["scope"],
                c["body"],
                date.fromisoformat(c["valid_from"]),
                date.fromisoformat(c["valid_to"]),
            ]
            for c in self.certified
        ]
        month = xlsx.Month.parse(self.month)
        return xlsx.workbook(
            [
                xlsx.Sheet(f"{self.month} 月报 report", header, table, LABELS),
                xlsx.Sheet(
                    "资质 certifications",
                    ["hospital", "scope", "body", "valid_from", "valid_to"],
                    certs,
                    LABELS,
                ),
                xlsx.Sheet(
                    "范围 scope",
                    ["field", "value"],
                    [["month", month or self.month], ["currency", "CNY"]],
                    _ABOUT_LABELS,
                ),
            ]
        )


_ENABLED_COLUMNS = [
    "its_results_recognised",
    "its_recognitions_reversed",
    "saved_for_others",
    "reversed_for_others",
    "net_saved_for_others",
]


def _enabled_dict(f: Figures) -> dict[str, Any]:
    values = [f.recognitions, f.reversals, yuan(f.saved_fen), yuan(f.reversed_fen)]
    return dict(zip(_ENABLED_COLUMNS, [*values, yuan(f.net_fen)], strict=True))


def _enabled_cells(f: Figures) -> list[object]:
    """Amounts as numbers (the CSV writes them as 12.50 all the same)."""
    return [
        f.recognitions,
        f.reversals,
        yuan_amount(f.saved_fen),
        yuan_amount(f.reversed_fen),
        yuan_amount(f.net_fen),
    ]


def _as_cell_or_blank(value: object) -> xlsx.Cell:
    return None if value is None or value == "" else _as_cell(value)


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
            a.add_sum(s)
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
            by_source.setdefault(s.key[0], Figures()).add_sum(s)
    return RegulatorReport(
        month, list(hospitals.values()), by_hospital, by_category, certified, totals, by_source
    )
