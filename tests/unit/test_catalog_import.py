"""Reading a provincial item list (CSV) and mapping its rows onto catalog items."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from broker.domain.catalog import Catalog, CatalogItem, ItemKind, RegionOverride
from broker.reference import catalog_import as ci
from broker.reference.loader import (
    ReferenceDataError,
    default_schemas_dir,
    load_catalog,
)

CATALOG_DIR = default_schemas_dir() / "catalog"

HEADER = "省项目编码,项目名称,LOINC编码,互认时限（天）,三级,二级,一级,类别,医保收费编码"


def item(code: str, name: str, loinc: tuple[str, ...] = (), **kw: object) -> CatalogItem:
    values: dict[str, object] = dict(
        code=code,
        kind=ItemKind.LAB,
        category="LAB",
        name_zh=name,
        name_en=code,
        loinc=loinc,
        recognizable=True,
        validity_days=7,
        qc_group="CHEMISTRY",
        fees={"3": Decimal("5.00"), "2": Decimal("4.50"), "1": Decimal("4.00")},
    )
    values.update(kw)
    return CatalogItem(**values)  # type: ignore[arg-type]


@pytest.fixture
def catalog() -> Catalog:
    items = [
        item("LAB-GLU", "葡萄糖", ("2345-7", "2339-0")),
        item("LAB-K", "钾", ("2823-3",)),
        item("LAB-NA", "钠", ("2951-2",)),
        item("LAB-CBC", "血常规（全血细胞计数）", ("58410-2",), kind=ItemKind.PANEL),
        item("LAB-CHOL", "总胆固醇", ("2093-3",), charge_codes=("250302001",)),
        item("LAB-TG", "甘油三酯", ("2571-8",), charge_codes=("250302002",)),
        item("LAB-X1", "重复收费甲", charge_codes=("250399999",)),
        item("LAB-X2", "重复收费乙", charge_codes=("250399999",)),
        item(
            "IMG-CT-CHEST-PLAIN",
            "胸部CT平扫",
            ("29252-4",),
            kind=ItemKind.IMAGING,
            category="CT",
            validity_days=90,
        ),
    ]
    return Catalog("test", {i.code: i for i in items}, frozenset())


def rows(*lines: str, header: str = HEADER) -> tuple[ci.Row, ...]:
    return ci.parse("\n".join((header, *lines)).encode()).rows


# ---------------------------------------------------------------------------- decoding


def test_decode_utf8_with_and_without_bom_and_gb18030() -> None:
    text = f"{HEADER}\nHB1,葡萄糖,2345-7,30,,,,检验,\n"
    assert ci.decode(text.encode()) == (text, "utf-8")
    assert ci.decode(b"\xef\xbb\xbf" + text.encode()) == (text, "utf-8-sig")
    assert ci.decode(text.encode("gb18030")) == (text, "gb18030")


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"PK\x03\x04rest-of-a-zip", "Excel workbook"),
        (b"\xd0\xcf\x11\xe0old-xls", "Excel workbook"),
        ("项目名称".encode("utf-16"), "UTF-16"),
    ],
)
def test_decode_refuses_workbooks_and_utf16(data: bytes, cause: str) -> None:
    with pytest.raises(ci.ImportFileError, match=cause) as caught:
        ci.decode(data)
    assert "CSV" in caught.value.fix


# ---------------------------------------------------------------------------- parsing


def test_chinese_headers_full_width_brackets_title_row_and_ignored_columns() -> None:
    text = (
        "四川省检查检验结果互认项目目录（2026年版）,,,,\n"
        "序号,省项目编码,项目名称,LOINC编码,互认时限（天）,三级,二级,一级,类别,医保收费编码,备注\n"
        "1,SC-001,葡萄糖,2345-7；2339-0,30天,5,4.5,4,临床化学检验类,250301001,\n"
    )
    parsed = ci.parse(text.encode("gb18030"))
    assert parsed.encoding == "gb18030"
    assert parsed.columns["validity_days"] == "互认时限（天）"
    assert parsed.ignored_columns == ("序号", "备注")
    (row,) = parsed.rows
    assert row.line == 3
    assert (row.code, row.name, row.loinc) == ("SC-001", "葡萄糖", ("2345-7", "2339-0"))
    assert row.validity_days == "30天"
    assert row.fees == {"3": "5", "2": "4.5", "1": "4"}
    assert (row.category, row.charge_code) == ("临床化学检验类", "250301001")


def test_english_headers_and_tab_separated() -> None:
    header = "code\tname\tloinc\tvalidity_days\tfee_3\tfee_2\tfee_1\tcategory\tcharge_code"
    (row,) = ci.parse(f"{header}\nX1\t钾\t2823-3\t7\t\t\t\tLAB\t\n".encode()).rows
    assert (row.code, row.name, row.loinc, row.validity_days) == ("X1", "钾", ("2823-3",), "7")
    assert row.fees == {}


def test_blank_lines_are_skipped_and_short_rows_padded() -> None:
    parsed = ci.parse(f"{HEADER}\n\nHB1,钾\n,,,,\n".encode())
    assert [(r.line, r.name, r.validity_days) for r in parsed.rows] == [(3, "钾", "")]


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("序号,名称,时限\n1,钾,7\n", "missing name, validity_days"),
        ("项目名称,备注\n钾,\n", "missing validity_days"),
        ("just some words\nnot a table\n", "no header row"),
        ("", "empty"),
        (f"{HEADER}\n", "no rows under it"),
        ("项目名称,name,互认时限\n钾,钾,7\n", "both mean name"),
    ],
)
def test_bad_files_name_the_cause_and_the_fix(text: str, cause: str) -> None:
    with pytest.raises(ci.ImportFileError, match=cause) as caught:
        ci.parse(text.encode())
    assert caught.value.fix


def test_a_fee_column_can_stand_in_for_the_window() -> None:
    (row,) = ci.parse("项目名称,三级价格(元)\n钾,5.00\n".encode()).rows
    assert row.fees == {"3": "5.00"} and row.validity_days == ""


@pytest.mark.parametrize(
    ("cell", "codes"),
    [
        ("2345-7;2339-0", ("2345-7", "2339-0")),
        ("2345-7 | 2339-0", ("2345-7", "2339-0")),
        ("2345-7；2339-0｜2345-7", ("2345-7", "2339-0")),
        ("", ()),
        ("-", ()),
        ("/", ()),
    ],
)
def test_split_loinc(cell: str, codes: tuple[str, ...]) -> None:
    assert ci.split_loinc(cell) == codes


@pytest.mark.parametrize(
    ("cell", "days"), [("30", 30), ("30天", 30), (" ３０ ", 30), ("1", 1), ("3650", 3650)]
)
def test_parse_days(cell: str, days: int) -> None:
    assert ci.parse_days(cell) == days


@pytest.mark.parametrize("cell", ["0", "3651", "六十", "30.5", "-7", "3个月", "١٢"])
def test_parse_days_refuses(cell: str) -> None:
    with pytest.raises(ValueError, match="whole number of days"):
        ci.parse_days(cell)


def test_parse_days_empty_is_none() -> None:
    assert ci.parse_days("") is None and ci.parse_days("/") is None


@pytest.mark.parametrize(
    ("cell", "fee"),
    [
        ("22", "22.00"),
        ("22.5", "22.50"),
        ("¥1,200.00", "1200.00"),
        ("￥35元", "35.00"),
        ("0", "0.00"),
        ("", None),
        ("-", None),
    ],
)
def test_parse_fee(cell: str, fee: str | None) -> None:
    parsed = ci.parse_fee(cell)
    assert (None if parsed is None else f"{parsed:.2f}") == fee


@pytest.mark.parametrize("cell", ["22.345", "-1", "abc", "1e3x", "NaN", "99999999"])
def test_parse_fee_refuses(cell: str) -> None:
    with pytest.raises(ValueError, match="yuan"):
        ci.parse_fee(cell)


@pytest.mark.parametrize(
    ("cell", "category"),
    [
        ("检验", "LAB"),
        ("临床化学检验类", "LAB"),
        ("CT", "CT"),
        ("CTA", "CT"),
        ("MRI", "MR"),
        ("磁共振", "MR"),
        ("DR", "DR"),
        ("超声", "US"),
        ("彩超", "US"),
        ("PET-CT", "NM"),
        ("心电图", "ECG"),
        ("放射影像", None),
        ("", None),
    ],
)
def test_category_of(cell: str, category: str | None) -> None:
    assert ci.category_of(cell) == category


# ---------------------------------------------------------------------------- mapping


def test_rows_map_by_loinc_then_charge_code_then_name(catalog: Catalog) -> None:
    plan = ci.map_rows(
        rows(
            "A1,血糖,2345-7,30,5.00,4.50,4.00,检验,",
            "A2,血清总胆固醇测定,,30,,,,检验,250302001",
            "A3,血常规（全血细胞计数）,,7,22,20,18,检验,",
            "A4,胸部CT平扫,29252-4,90,210,189,168,CT,",
        ),
        catalog,
    )
    assert not plan.unmapped
    assert [(m.row.code, m.item, m.by) for m in plan.mapped] == [
        ("A1", "LAB-GLU", ci.Rule.LOINC),
        ("A2", "LAB-CHOL", ci.Rule.CHARGE_CODE),
        ("A3", "LAB-CBC", ci.Rule.NAME),
        ("A4", "IMG-CT-CHEST-PLAIN", ci.Rule.LOINC),
    ]
    assert plan.by_rule() == {"loinc": 2, "charge-code": 1, "name": 1}
    assert plan.validity_days() == {
        "LAB-GLU": 30,
        "LAB-CHOL": 30,
        "LAB-CBC": 7,
        "IMG-CT-CHEST-PLAIN": 90,
    }
    assert plan.fees()["LAB-CBC"] == {
        "3": Decimal("22.00"),
        "2": Decimal("20.00"),
        "1": Decimal("18.00"),
    }
    assert "LAB-CHOL" not in plan.fees()


def test_name_match_ignores_full_width_and_spaces(catalog: Catalog) -> None:
    (m,) = ci.map_rows(rows("A3,血常规 (全血细胞计数),,7,,,,,"), catalog).mapped
    assert m.item == "LAB-CBC"


def test_one_loinc_code_found_is_enough(catalog: Catalog) -> None:
    (m,) = ci.map_rows(rows("A1,葡萄糖,99999-9|2345-7,30,,,,,"), catalog).mapped
    assert (m.item, m.by) == ("LAB-GLU", ci.Rule.LOINC)


@pytest.mark.parametrize(
    ("line", "reason", "detail"),
    [
        ("B1,神秘项目,99999-9,30,,,,检验,", ci.Reason.NO_LOINC_MATCH, "LOINC 99999-9 on no item"),
        ("B2,神秘项目,abc,30,,,,检验,", ci.Reason.NO_LOINC_MATCH, "abc: not a LOINC code"),
        ("B3,神秘项目,,30,,,,检验,250300000", ci.Reason.UNKNOWN_CHARGE_CODE, "250300000"),
        ("B4,神秘项目,,30,,,,检验,", ci.Reason.NAME_NOT_FOUND, "'神秘项目' is no item's name"),
        ("B5,钠,2951-2|2823-3,7,,,,检验,", ci.Reason.AMBIGUOUS, "LAB-K, LAB-NA"),
        ("B6,钾,2951-2,7,,,,检验,", ci.Reason.AMBIGUOUS, "loinc → LAB-NA; name → LAB-K"),
        ("B7,某收费,,7,,,,检验,250399999", ci.Reason.AMBIGUOUS, "LAB-X1, LAB-X2"),
        ("B8,葡萄糖,2345-7,六十,,,,检验,", ci.Reason.INVALID_DAYS, "LAB-GLU: 互认时限 '六十'"),
        ("B9,葡萄糖,2345-7,30,5.001,,,检验,", ci.Reason.INVALID_FEE, "tier 3"),
        ("C1,葡萄糖,2345-7,,,,,检验,", ci.Reason.INVALID_DAYS, "no 互认时限 and no fee"),
        ("C2,葡萄糖,2345-7,30,,,,CT,", ci.Reason.CATEGORY_MISMATCH, "is CT, but LAB-GLU"),
        ("C3,葡萄糖,2345-7,30,,,,检验,,extra", ci.Reason.MALFORMED_ROW, "extra"),
    ],
)
def test_rows_not_mapped_say_why(
    catalog: Catalog, line: str, reason: ci.Reason, detail: str
) -> None:
    plan = ci.map_rows(rows(line), catalog)
    assert not plan.mapped
    (u,) = plan.unmapped
    assert u.reason is reason and detail in u.detail, u.detail


def test_fees_without_a_window_are_applied(catalog: Catalog) -> None:
    (m,) = ci.map_rows(rows("A1,葡萄糖,2345-7,,6,,,检验,"), catalog).mapped
    assert m.validity_days is None and m.fees == {"3": Decimal("6.00")}
    assert ci.map_rows(rows("A1,葡萄糖,2345-7,,6,,,检验,"), catalog).validity_days() == {}


def test_two_rows_giving_one_item_different_values_are_both_set_aside(
    catalog: Catalog,
) -> None:
    plan = ci.map_rows(
        rows("A1,葡萄糖,2345-7,30,,,,,", "A2,血糖,2339-0,7,,,,,", "A3,钾,2823-3,7,,,,,"),
        catalog,
    )
    assert [m.item for m in plan.mapped] == ["LAB-K"]
    assert [(u.row.line, u.reason) for u in plan.unmapped] == [
        (2, ci.Reason.DUPLICATE),
        (3, ci.Reason.DUPLICATE),
    ]
    assert "also on line 3" in plan.unmapped[0].detail


def test_two_rows_giving_one_item_the_same_values_are_applied_once(catalog: Catalog) -> None:
    plan = ci.map_rows(rows("A1,葡萄糖,2345-7,30,,,,,", "A2,血糖,2339-0,30,,,,,"), catalog)
    assert not plan.unmapped and len(plan.mapped) == 2
    assert plan.validity_days() == {"LAB-GLU": 30}


# ---------------------------------------------------------------------------- output


def test_region_document_is_schema_valid(catalog: Catalog) -> None:
    plan = ci.map_rows(
        rows("A1,葡萄糖,2345-7,30,5,4.5,,检验,", "A3,血常规（全血细胞计数）,,7,,,,,"), catalog
    )
    source = ci.source_document(
        "四川省卫生健康委员会《检查检验结果互认项目目录》（川卫发〔2026〕1号）",
        region="51",
        issuer="四川省卫生健康委员会",
        url="https://wsjkw.sc.gov.cn/example",
        published="2026-03",
    )
    doc = ci.region_document(
        plan,
        region="51",
        name_zh="四川省",
        name_en="Sichuan",
        version="2026.03",
        effective_from=date(2026, 4, 1),
        source=source,
    )
    schema = json.loads((CATALOG_DIR / "region.schema.json").read_text(encoding="utf-8"))
    assert ci.schema_errors(doc, schema) == []
    assert doc["validity_days"] == {"LAB-GLU": 30, "LAB-CBC": 7}
    assert doc["fees"] == {"LAB-GLU": {"3": "5.00", "2": "4.50"}}
    assert doc["effective_from"] == "2026-04-01"
    assert doc["source"]["region"] == "51" and "note" not in doc["source"]
    broken = {**doc, "validity_days": {"LAB-GLU": 0}}
    assert ci.schema_errors(broken, schema) == [
        "validity_days/LAB-GLU: 0 is less than the minimum of 1"
    ]


def test_changes_against_the_regions_current_catalog(catalog: Catalog) -> None:
    current = Catalog(
        catalog.version,
        catalog.items,
        frozenset(),
        regions=(RegionOverride("51", {"LAB-K": 5}, source="旧文件"),),
    ).for_region("51")
    plan = ci.map_rows(
        rows("A1,葡萄糖,2345-7,30,5.00,4.50,4.00,,", "A2,钾,2823-3,7,,,,,", "A3,钠,2951-2,7,,,,,"),
        catalog,
    )
    assert [(c.item, c.what, c.old, c.new, c.old_source) for c in ci.changes(current, plan)] == [
        ("LAB-GLU", "validity_days", "7", "30", None),
        ("LAB-K", "validity_days", "5", "7", "旧文件"),
    ]
    priced = ci.map_rows(rows("A1,葡萄糖,2345-7,,6.00,,,,"), catalog)
    (fee,) = ci.changes(current, priced)
    assert (fee.what, fee.old, fee.new) == ("fee:3", "5.00", "6.00")


# ---------------------------------------------------------------------------- loader


def write_yaml(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


def test_load_catalog_applies_the_extra_folder_after_the_shipped_files(tmp_path: Path) -> None:
    shipped = load_catalog(default_schemas_dir())
    assert shipped.for_region("51").items["LAB-ESR"].validity_days == 5  # regions/51.yaml
    source = {"document": "测试用互认目录（测试〔2026〕1号）", "issuer": "测试", "region": "51"}
    write_yaml(
        tmp_path / "regions" / "51.yaml",
        {
            "region": "51",
            "name": {"zh": "四川省", "en": "Sichuan"},
            "version": "2026.05.01",
            "source": source,
            "validity_days": {"LAB-ESR": 10, "LAB-ALT": 21},
        },
    )
    write_yaml(
        tmp_path / "mappings" / "H077.yaml",
        {
            "hospital": "H077",
            "mappings": [{"system": "urn:mrb:hospital:H077:lab-code", "codes": {"ALT": "LAB-ALT"}}],
        },
    )
    loaded = load_catalog(default_schemas_dir(), tmp_path)
    sichuan = loaded.for_region("51")
    assert sichuan.items["LAB-ESR"].validity_days == 10  # the data folder wins
    assert sichuan.items["LAB-ALT"].validity_source == "测试用互认目录（测试〔2026〕1号），测试"
    assert sichuan.items["IMG-MR-LSPINE-PLAIN"].validity_days == 90  # shipped entry kept
    assert sichuan.applied == ("51@-", "51@2026.05.01")
    assert loaded.for_region("510502").items["LAB-ESR"].validity_days == 7  # the city's own
    alt = loaded.item_for_code("H077", "urn:mrb:hospital:H077:lab-code", "ALT")
    assert alt is not None and alt.code == "LAB-ALT"
    assert load_catalog(default_schemas_dir(), tmp_path / "absent").regions == shipped.regions


def test_load_catalog_checks_extra_files_against_the_schemas(tmp_path: Path) -> None:
    write_yaml(tmp_path / "regions" / "51.yaml", {"region": "51", "validity_days": {}})
    with pytest.raises(ReferenceDataError, match=r"51\.yaml: \(top\): 'name' is a required"):
        load_catalog(default_schemas_dir(), tmp_path)


def test_cells_under_ignored_columns_are_not_overflow(catalog: Catalog) -> None:
    parsed = ci.parse(f"{HEADER},备注\nA1,葡萄糖,2345-7,30,,,,检验,,省级\n".encode())
    assert parsed.ignored_columns == ("备注",)
    (m,) = ci.map_rows(parsed.rows, catalog).mapped
    assert m.item == "LAB-GLU"
