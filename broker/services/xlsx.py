"""Finance reports as Excel workbooks (.xlsx), written with XlsxWriter (in memory).

Each sheet has its Chinese column names on the first row and the machine names (the CSV
header) on the second, both frozen. Cells keep their types: integers and yuan amounts are
numbers (yuan with two decimals), days and months are dates, and every text cell is
written with `write_string`, so text starting with = + - @ stays text and is never read as
a formula (the CSV export quotes such text instead; here a string cell is never one).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

import xlsxwriter

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"
MONTH_FORMAT = "yyyy-mm"
NOT_GIVEN = "未给出"  # a share the catalog gave no ratio for: never written as 0


@dataclass(frozen=True)
class Month:
    """A month cell ("2026-05"): a date (its first day) shown as yyyy-mm."""

    first_day: date

    @classmethod
    def parse(cls, text: str) -> Month | None:
        try:
            year, month = (int(p) for p in text.split("-"))
            return cls(date(year, month, 1)) if len(text) == 7 else None
        except ValueError:
            return None


@dataclass(frozen=True)
class NotGiven:
    """An amount that cannot be stated (no reimbursement ratio given)."""


NOT_GIVEN_CELL = NotGiven()

Cell = str | int | Decimal | date | Month | NotGiven | None


@dataclass(frozen=True)
class Sheet:
    name: str  # at most 31 characters, no []:*?/\
    columns: Sequence[str]  # machine names, as in the CSV header
    rows: Sequence[Sequence[Cell]]
    labels: Mapping[str, str]  # column -> Chinese header (the name itself when absent)


def workbook(sheets: Sequence[Sheet]) -> bytes:
    """The sheets as one .xlsx file."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(
        out,
        {
            "in_memory": True,
            # write_string is used for text anyway; belt and braces for any other path.
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    head = book.add_format({"bold": True, "bottom": 1, "bg_color": "#EEF2F7"})
    key_row = book.add_format({"italic": True, "font_color": "#555555", "bottom": 1})
    money = book.add_format({"num_format": MONEY_FORMAT})
    day = book.add_format({"num_format": DATE_FORMAT})
    month = book.add_format({"num_format": MONTH_FORMAT})
    gap = book.add_format({"font_color": "#888888"})
    for sheet in sheets:
        ws = book.add_worksheet(sheet.name)
        for c, column in enumerate(sheet.columns):
            ws.write_string(0, c, sheet.labels.get(column, column), head)
            ws.write_string(1, c, column, key_row)
        for r, row in enumerate(sheet.rows, start=2):
            for c, value in enumerate(row):
                if value is None or value == "":
                    ws.write_blank(r, c, None)
                elif isinstance(value, NotGiven):
                    ws.write_string(r, c, NOT_GIVEN, gap)
                elif isinstance(value, bool):
                    ws.write_boolean(r, c, value)
                elif isinstance(value, Decimal):
                    ws.write_number(r, c, float(value), money)
                elif isinstance(value, int):
                    ws.write_number(r, c, value)
                elif isinstance(value, Month):
                    ws.write_datetime(r, c, datetime.combine(value.first_day, time()), month)
                elif isinstance(value, date):
                    ws.write_datetime(r, c, datetime.combine(value, time()), day)
                else:
                    ws.write_string(r, c, str(value))
        ws.freeze_panes(2, 0)  # both header rows stay in view
        ws.autofit()
    book.close()
    return out.getvalue()
