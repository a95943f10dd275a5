"""The medical-insurance fund's share of a saving: the arithmetic (to the fen, half up, the
two shares adding up to the fee exactly), the catalog's optional ratios per category and
item with regional overrides, and the reports' JSON, CSV and .xlsx figures."""

from __future__ import annotations

import io
import shutil
import zipfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.catalog import FundShare, InvalidFundShare, fund_share
from broker.domain.check_items import StoredCheckItem
from broker.domain.ledger import Split, split_fee
from broker.domain.recognition import Order
from broker.domain.registry import CertifyingBody
from broker.reference.loader import ReferenceDataError, default_schemas_dir, load_catalog
from broker.services.reports import Activity, Figures, RegulatorReport, SavingsReport
from broker.storage import hospitals

openpyxl = pytest.importorskip("openpyxl")

# -- arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "share", "fund", "patient"),
    [
        (540, "0.70", 378, 162),
        (5, "0.5", 3, 2),  # 2.5 fen: half up, to the fund
        (15, "0.3", 5, 10),  # 4.5 fen: half up
        (999, "0.6667", 666, 333),  # 666.0333
        (540, "0", 0, 540),
        (540, "1", 540, 0),
        (0, "0.70", 0, 0),  # a panel-only analyte saves nothing
    ],
)
def test_the_fund_share_is_rounded_to_the_fen_half_up(
    fen: int, share: str, fund: int, patient: int
) -> None:
    assert split_fee(fen, Decimal(share)) == Split(fund, patient)


@given(
    st.integers(min_value=0, max_value=10**9),
    st.decimals(min_value=0, max_value=1, places=4, allow_nan=False),
)
def test_the_shares_always_add_up_to_the_fee(fen: int, share: Decimal) -> None:
    split = split_fee(fen, share)
    assert split.fund_fen + split.patient_fen == split.amount_fen == fen
    assert 0 <= split.fund_fen <= fen and 0 <= split.patient_fen <= fen
    back = split.negated()
    assert (back.fund_fen, back.patient_fen) == (-split.fund_fen, -split.patient_fen)


@pytest.mark.parametrize("share", ["1.01", "-0.1", "NaN"])
def test_a_share_outside_0_to_1_is_refused(share: str) -> None:
    with pytest.raises(InvalidFundShare, match="fund share"):
        fund_share(share)
    with pytest.raises(ValueError, match="not a fraction from 0 to 1"):
        split_fee(100, Decimal(share))


def test_a_share_that_is_no_number_is_refused() -> None:
    with pytest.raises(InvalidFundShare, match="not a decimal number"):
        fund_share("seventy per cent")


def test_a_check_item_keeps_the_share_it_was_answered_with() -> None:
    item = StoredCheckItem(Order("http://loinc.org", "718-7"), "RECOGNIZABLE", fee_saved="5.40")
    assert "fund_share" not in item.as_json() and item.saving_fund_share is None
    shared = StoredCheckItem.from_json(item.as_json() | {"fund_share": "0.70"})
    assert shared.saving_fund_share == Decimal("0.70")
    assert StoredCheckItem.from_json(shared.as_json()) == shared


# -- the catalog --------------------------------------------------------------------------


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    """A copy of the shipped catalog, to edit."""
    shutil.copytree(default_schemas_dir() / "catalog", tmp_path / "schemas" / "catalog")
    return tmp_path / "schemas"


def _region(folder: Path, code: str, body: str) -> Path:
    (folder / "regions").mkdir(parents=True, exist_ok=True)
    path = folder / "regions" / f"{code}.yaml"
    path.write_text(f'region: "{code}"\nname: {{zh: 测试, en: Test}}\n{body}', encoding="utf-8")
    return path


def test_the_shipped_catalog_gives_ratios_only_in_the_demo_region() -> None:
    catalog = load_catalog(default_schemas_dir())
    assert all(i.fund_share is None for i in catalog.items.values())  # no national ratio
    luzhou = catalog.for_region("510502")
    assert luzhou.items["LAB-CBC"].fund_share == FundShare(Decimal("0.70"), None)
    ecg = [i for i in luzhou.items.values() if i.category == "ECG"]
    assert ecg and all(i.fund_share is None for i in ecg)  # deliberately not given
    assert catalog.for_region("320102").items["LAB-CBC"].fund_share is None


def test_national_category_item_and_regional_ratios_apply_most_specific_last(
    schemas: Path, tmp_path: Path
) -> None:
    path = schemas / "catalog" / "catalog.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "negative_list:",
        'fund_share_categories:\n  LAB: {share: "0.60", source: unverified-default}\n'
        "negative_list:",
        1,
    )
    text = text.replace(
        '    fees: {"3": "6.00", "2": "5.40", "1": "4.80"}\n  - code: LAB-WBC',
        '    fees: {"3": "6.00", "2": "5.40", "1": "4.80"}\n'
        '    fund_share: {share: "0.90", source: {document: 某医保目录 2026}}\n'
        "  - code: LAB-WBC",
        1,
    )
    path.write_text(text, encoding="utf-8")
    extra = tmp_path / "data"
    _region(
        extra, "99", 'fund_share_categories: {LAB: {share: "0.50", source: unverified-default}}\n'
    )
    _region(extra, "9901", 'fund_shares: {LAB-WBC: {share: "0.75", source: unverified-default}}\n')
    catalog = load_catalog(schemas, extra)
    hgb, wbc = catalog.items["LAB-HGB"], catalog.items["LAB-WBC"]
    assert hgb.fund_share == FundShare(Decimal("0.90"), "某医保目录 2026")  # its own
    assert wbc.fund_share == FundShare(Decimal("0.60"), None)  # the national category's
    view = catalog.for_region("990101")
    assert view.items["LAB-HGB"].fund_share == FundShare(Decimal("0.50"), None)  # region wins
    assert view.items["LAB-WBC"].fund_share == FundShare(Decimal("0.75"), None)  # city item
    assert catalog.for_region("990201").items["LAB-WBC"].fund_share.share == Decimal("0.50")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            'fund_shares: {LAB-HGB: {share: "1.5", source: unverified-default}}\n',
            "fund_shares/LAB-HGB/share: '1.5' does not match",
        ),
        (
            "fund_shares: {LAB-HGB: {share: 0.7, source: unverified-default}}\n",
            "fund_shares/LAB-HGB/share: 0.7 is not of type 'string'",
        ),
        (
            'fund_share_categories: {LAB: {share: "0.70"}}\n',
            "'source' is a required property",
        ),
        (
            'fund_share_categories: {LABS: {share: "0.70", source: unverified-default}}\n',
            "fund_share_categories",
        ),
    ],
)
def test_a_bad_ratio_is_refused_with_a_clear_message(tmp_path: Path, body: str, says: str) -> None:
    extra = tmp_path / "data"
    path = _region(extra, "99", body)
    with pytest.raises(ReferenceDataError) as refused:
        load_catalog(default_schemas_dir(), extra)
    message = str(refused.value)
    assert str(path) in message and says in message
    if "share:" in says:
        assert "a fraction of the fee from 0 to 1" in message  # says what it takes


# -- reports ------------------------------------------------------------------------------


def _split_figures() -> Figures:
    return Figures(
        recognitions=3, saved_fen=1620, reversals=1, reversed_fen=540, split_entries=3,
        fund_fen=756, patient_fen=324,
    )  # fmt: skip


def _report(group_by: str = "month") -> SavingsReport:
    rows = {"2026-04": _split_figures(), "2026-05": Figures(recognitions=1, saved_fen=600)}
    totals = Figures(
        recognitions=4, saved_fen=2220, reversals=1, reversed_fen=540, split_entries=3,
        fund_fen=756, patient_fen=324,
    )  # fmt: skip
    return SavingsReport(group_by, "2026-04", "2026-05", "H002", rows, totals)  # type: ignore[arg-type]


def test_json_gives_the_shares_and_null_where_no_ratio_was_given() -> None:
    out = _report().as_dict()
    april, may = out["groups"]
    assert (april["fund_share"], april["patient_share"], april["share_not_given"]) == (
        "7.56",
        "3.24",
        "0.00",
    )
    assert may["fund_share"] is None and may["patient_share"] is None
    assert may["share_not_given"] == "6.00"
    total = out["totals"]
    assert (total["net_saved"], total["fund_share"], total["share_not_given"]) == (
        "16.80",
        "7.56",
        "6.00",
    )


def _book(content: bytes) -> object:
    return openpyxl.load_workbook(io.BytesIO(content))


def test_the_savings_workbook_holds_the_json_figures_as_numbers_and_dates() -> None:
    report = _report()
    book = _book(report.as_xlsx())
    sheet = book.worksheets[0]  # type: ignore[attr-defined]
    assert sheet.freeze_panes == "A3"
    zh = [c.value for c in sheet[1]]
    keys = [c.value for c in sheet[2]]
    assert zh[0] == "月份" and zh[keys.index("fund_share")] == "基金支付(元)"
    assert zh[keys.index("patient_share")] == "个人自付(元)"
    data = list(sheet.iter_rows(min_row=3))
    assert isinstance(data[0][0].value, datetime) and data[0][0].number_format == "yyyy-mm"
    assert data[0][0].value == datetime(2026, 4, 1)
    expected = report.as_dict()
    for row, group in zip(data, [*expected["groups"], expected["totals"]], strict=True):
        cells = dict(zip(keys, row, strict=True))
        for key in ("saved", "reversed", "net_saved", "fund_share", "patient_share"):
            cell = cells[key]
            if group[key] is None:
                assert cell.value == "未给出" and cell.data_type == "s"
            else:
                assert Decimal(str(cell.value)) == Decimal(group[key])
                assert cell.number_format == "#,##0.00"
        assert cells["recognitions"].value == group["recognitions"]
    assert data[-1][0].value == "合计 TOTAL"
    scope = {r[0].value: r[1] for r in book.worksheets[1].iter_rows(min_row=3)}  # type: ignore[attr-defined]
    assert scope["hospital"].value == "H002" and scope["from"].value == datetime(2026, 4, 1)


@pytest.mark.parametrize("evil", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", '=HYPERLINK("x")'])
def test_text_that_looks_like_a_formula_stays_text_in_the_workbook(evil: str) -> None:
    report = SavingsReport("item", None, None, None, {evil: Figures(recognitions=1)}, Figures())
    sheet = _book(report.as_xlsx()).worksheets[0]  # type: ignore[attr-defined]
    cell = sheet["A3"]
    assert cell.value == evil and cell.data_type == "s"  # a string, not a formula ("f")
    with io.BytesIO(report.as_xlsx()) as raw:
        xml = zipfile.ZipFile(raw).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in xml


def test_the_regulator_workbook_has_dates_numbers_and_not_given_shares() -> None:
    h = hospitals.Hospital("H001", "=cmd|' /C calc'!A0", "510502", "3")
    activity = Activity(lookups=2, recognitions=1, saved_fen=540)
    report = RegulatorReport(
        "2026-05",
        [h],
        {"H001": activity},
        {c: Activity() for c in ("DR", "CT", "MR", "US", "LAB", "OTHER")},
        [
            {
                "hospital": "H001",
                "scope": "HEMATOLOGY",
                "body": CertifyingBody.PROVINCIAL_EQA.value,
                "valid_from": date(2026, 1, 1).isoformat(),
                "valid_to": date(2026, 12, 31).isoformat(),
            }
        ],
        activity,
    )
    book = _book(report.as_xlsx())
    table, certs = book.worksheets[0], book.worksheets[1]  # type: ignore[attr-defined]
    keys = [c.value for c in table[2]]
    first = dict(zip(keys, next(table.iter_rows(min_row=3)), strict=True))
    assert first["name"].value == h.name and first["name"].data_type == "s"
    assert first["net_saved"].value == 5.4 and first["fund_share"].value == "未给出"
    assert first["saved_for_others"].value == 0 and first["lookups"].value == 2
    assert report.as_dict()["hospitals"][0]["fund_share"] is None
    assert certs["D3"].value == datetime(2026, 1, 1) and certs["D3"].number_format == "yyyy-mm-dd"
    assert table.title == "2026-05 月报 report"
