"""`mrb catalog import`: a provincial list in, the broker's catalog for the region out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from broker.bootstrap import Container
from broker.cli.main import app
from broker.reference import catalog_import as ci
from broker.reference.loader import default_schemas_dir, load_catalog
from broker.settings import Settings

runner = CliRunner()

DOCUMENT = (
    "四川省卫生健康委员会《四川省医疗机构检查检验结果互认项目目录（测试用）》（川卫测〔2026〕1号）"
)
ISSUER = "四川省卫生健康委员会"
CITED = f"{DOCUMENT}，{ISSUER}，2026-03"

# A provincial list as a government Excel export saves it: a title row above the header,
# 序号 and 备注 columns the importer ignores, full-width brackets in the header.
GOOD_ROWS = """\
1,SC-JY-001,红细胞沉降率,4537-7,10,8.50,7.60,6.80,临床血液检验类,250102001,
2,SC-JY-002,丙氨酸氨基转移酶,1742-6,21,7.00,6.30,5.60,临床化学检验类,250305001,
3,SC-JY-003,糖化血红蛋白,4548-4|17856-6,60,,,,临床化学检验类,,
4,SC-JY-004,血常规（全血细胞计数）,,7,22.00,20.00,18.00,临床血液检验类,250101015,
8,SC-YX-001,胸部CT平扫,29252-4,90,200.00,180.00,160.00,CT,,
9,SC-YX-002,腰椎MRI平扫,30679-5,120,,,,MR,,
"""
BAD_ROWS = """\
5,SC-JY-005,钠,2951-2;2823-3,7,,,,临床化学检验类,,钠和钾的编码写在了一起
6,SC-JY-006,幽门螺杆菌抗体,,30,,,,临床免疫检验类,,
7,SC-JY-007,促甲状腺激素,3016-3,三十,,,,临床免疫检验类,,
"""


def list_csv(rows: str) -> str:
    return (
        "四川省医疗机构检查检验结果互认项目目录（测试用）,,,,,,,,,,\n"
        "序号,省项目编码,项目名称,LOINC编码,互认时限（天）,三级,二级,一级,类别,医保收费编码,备注\n"
        + rows
    )


def write(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def env_for(data: Path, **extra: str) -> dict[str, str]:
    data.mkdir(parents=True, exist_ok=True)  # the broker's folder: import never makes it
    return {"MRB_DATA_DIR": str(data), "COLUMNS": "250", **extra}


def import_args(csv: Path, *more: str) -> list[str]:
    return [
        "catalog",
        "import",
        "--region",
        "51",
        str(csv),
        "--source-document",
        DOCUMENT,
        "--source-issuer",
        ISSUER,
        "--source-date",
        "2026-03",
        "--source-url",
        "https://wsjkw.sc.gov.cn/test-list",
        "--version",
        "2026.03",
        "--effective-from",
        "2026-04-01",
        *more,
    ]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gb18030"])
async def test_import_writes_the_region_file_the_broker_then_uses(
    tmp_path: Path, encoding: str
) -> None:
    data = tmp_path / "data"
    csv = write(tmp_path / "sichuan.csv", list_csv(GOOD_ROWS + BAD_ROWS), encoding)

    result = runner.invoke(app, import_args(csv), env=env_for(data))

    assert result.exit_code == 3, result.output  # some rows not mapped; the rest written
    out = result.output
    assert f"9 rows read ({encoding})" in out
    assert "6 mapped (LOINC 5, charge code 0, name 1)" in out and "3 not mapped" in out
    assert "ambiguous" in out and "LAB-K, LAB-NA" in out
    assert "name not found" in out and "幽门螺杆菌抗体" in out
    assert "invalid days" in out and "'三十'" in out
    assert "LAB-ESR" in out and "5 → 10" in out  # the shipped 51.yaml said 5
    assert "IMG-MR-LSPINE-PLAIN" in out and "90 → 120" in out
    assert "charge codes of 3 row(s) left out" in out
    region_file = data / "catalog" / "regions" / "51.yaml"
    assert f"wrote {region_file}" in out
    assert region_file.stat().st_mode & 0o077 == 0  # the CLI's umask

    doc = yaml.safe_load(region_file.read_text(encoding="utf-8"))
    schema = json.loads((default_schemas_dir() / "catalog" / "region.schema.json").read_text())
    assert ci.schema_errors(doc, schema) == []
    assert doc["version"] == "2026.03" and doc["effective_from"] == "2026-04-01"
    assert doc["name"] == {"zh": "四川省", "en": "Sichuan"}  # from the shipped 51.yaml
    assert doc["validity_days"] == {
        "LAB-ESR": 10,
        "LAB-ALT": 21,
        "LAB-HBA1C": 60,
        "LAB-CBC": 7,
        "IMG-CT-CHEST-PLAIN": 90,
        "IMG-MR-LSPINE-PLAIN": 120,
    }
    assert doc["fees"]["LAB-CBC"] == {"3": "22.00", "2": "20.00", "1": "18.00"}
    assert "LAB-NA" not in doc["validity_days"] and "LAB-TSH" not in doc["validity_days"]
    assert not (data / "catalog" / "mappings").exists()  # the mapping schema refuses "*"

    sichuan = load_catalog(default_schemas_dir(), data / "catalog").for_region("51")
    assert sichuan.items["LAB-ESR"].validity_days == 10
    assert sichuan.items["LAB-ESR"].validity_source == CITED
    assert sichuan.items["IMG-MR-LSPINE-PLAIN"].validity_days == 120  # beats the shipped 90
    assert sichuan.items["LAB-HBA1C"].validity_days == 60
    assert str(sichuan.items["LAB-CBC"].fees["3"]) == "22.00"
    assert sichuan.items["LAB-TSH"].validity_days == 30  # the bad row changed nothing
    assert sichuan.items["LAB-TSH"].validity_source is None
    assert "51@2026.03" in sichuan.version_label
    luzhou = load_catalog(default_schemas_dir(), data / "catalog").for_region("510502")
    assert luzhou.items["LAB-ESR"].validity_days == 7  # the city's own file still wins

    # The composition root passes the data folder: the running broker uses the windows.
    container = Container.build(Settings(data_dir=data, create_keys=True))
    try:
        broker = container.reference_rules().catalog.for_region("510502")
        assert broker.items["LAB-ALT"].validity_days == 21
        assert broker.items["LAB-ALT"].validity_source == CITED
    finally:
        await container.close()


def test_every_row_mapped_exits_0_and_a_new_import_replaces_the_old(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = write(tmp_path / "a.csv", list_csv(GOOD_ROWS), "utf-8-sig")
    assert runner.invoke(app, import_args(first), env=env_for(data)).exit_code == 0

    second = write(tmp_path / "b.csv", list_csv(GOOD_ROWS.replace(",21,", ",28,")), "gb18030")
    again = runner.invoke(app, import_args(second), env=env_for(data))
    assert again.exit_code == 0, again.output
    assert "LAB-ALT" in again.output and "21 → 28" in again.output  # old = the first import
    assert "LAB-ESR" not in again.output  # unchanged since the first import
    sichuan = load_catalog(default_schemas_dir(), data / "catalog").for_region("51")
    assert sichuan.items["LAB-ALT"].validity_days == 28


def test_dry_run_json_reports_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv = write(tmp_path / "list.csv", list_csv(GOOD_ROWS + BAD_ROWS), "gb18030")
    result = runner.invoke(
        app,
        ["catalog", "import", "--region", "51", str(csv), "--dry-run", "--json"],
        env=env_for(data),
    )
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["encoding"] == "gb18030"
    assert (report["rows_read"], report["mapped"], report["not_mapped"]) == (9, 6, 3)
    assert report["mapped_by"] == {"loinc": 5, "charge-code": 0, "name": 1}
    reasons = {r["code"]: (r["reason"], r["line"]) for r in report["not_mapped_rows"]}
    assert reasons == {
        "SC-JY-005": ("ambiguous", 9),
        "SC-JY-006": ("name-not-found", 10),
        "SC-JY-007": ("invalid-days", 11),
    }
    windows = {
        c["item"]: (c["old"], c["new"]) for c in report["changed"] if c["what"] == "validity_days"
    }
    assert windows["LAB-ESR"] == ("5", "10") and windows["IMG-MR-LSPINE-PLAIN"] == ("90", "120")
    fees = {(c["item"], c["what"]): (c["old"], c["new"]) for c in report["changed"]}
    assert fees[("LAB-ESR", "fee:3")] == ("8.00", "8.50")
    assert report["charge_codes"]["rows"] == 3 and not report["charge_codes"]["written"]
    assert report["written"] == [] and report["held"] == "dry run: nothing written"
    assert report["ignored_columns"] == ["序号", "备注"]
    assert not (data / "catalog").exists()


def test_strict_writes_nothing_when_a_row_does_not_map(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv = write(tmp_path / "list.csv", list_csv(GOOD_ROWS + BAD_ROWS), "utf-8-sig")
    result = runner.invoke(app, import_args(csv, "--strict"), env=env_for(data))
    assert result.exit_code == 3
    assert "--strict: nothing written, 3 row(s) not mapped" in result.output
    assert not (data / "catalog").exists()


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (
            "序号,名称,时限\n1,钾,7\n".encode(),
            "missing name, validity_days",
        ),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        ("项目名称,互认时限(天)\n".encode("gb18030"), "no rows under it"),
    ],
)
def test_a_bad_file_exits_2_naming_cause_and_fix(
    tmp_path: Path, content: bytes, cause: str
) -> None:
    csv = tmp_path / "list.csv"
    csv.write_bytes(content)
    result = runner.invoke(app, import_args(csv), env=env_for(tmp_path / "data"))
    assert result.exit_code == 2
    assert cause in result.output and "fix:" in result.output
    assert not (tmp_path / "data" / "catalog").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--region", "51", "LIST"], "a source document is required"),
        (["--region", "5x", "LIST", "--dry-run"], "not a GB/T 2260 prefix"),
        (["--region", "51", "missing.csv", "--dry-run"], "no such file"),
        (
            ["--region", "51", "LIST", "--source-document", DOCUMENT, "--source-url", "ftp://x"],
            "not an http(s) address",
        ),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    csv = write(tmp_path / "list.csv", list_csv(GOOD_ROWS), "utf-8")
    argv = ["catalog", "import", *(str(csv) if a == "LIST" else a for a in args)]
    result = runner.invoke(app, argv, env=env_for(tmp_path / "data"))
    assert result.exit_code == 2 and message in result.output, result.output


def test_charge_codes_are_mapped_region_wide_once_the_schema_allows_it(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), schemas)
    path = schemas / "catalog" / "mapping.schema.json"
    schema = json.loads(path.read_text())
    properties = schema["properties"]
    properties["hospital"]["pattern"] = r"^(\*|[A-Za-z0-9_-]{1,32})$"
    system = properties["mappings"]["items"]["properties"]["system"]
    system["pattern"] = r"^urn:mrb:(hospital|region):[A-Za-z0-9_-]{1,32}:[a-z0-9][a-z0-9-]*$"
    path.write_text(json.dumps(schema))
    data = tmp_path / "data"
    csv = write(tmp_path / "list.csv", list_csv(GOOD_ROWS), "utf-8-sig")

    result = runner.invoke(app, import_args(csv), env=env_for(data, MRB_SCHEMAS_DIR=str(schemas)))

    assert result.exit_code == 0, result.output
    assert "charge codes: 3 mapped as urn:mrb:region:51:charge-code" in result.output
    catalog = load_catalog(schemas, data / "catalog")
    cbc = catalog.item_for_code("H123", "urn:mrb:region:51:charge-code", "250101015")
    assert cbc is not None and cbc.code == "LAB-CBC"
