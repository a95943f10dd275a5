"""The medical-insurance fund's and the patient's shares of a saving, on SQLite and
PostgreSQL: fixed in the ledger when booked (a later catalog change rewrites nothing),
reversed together with the saving, and null (never 0) where the catalog gives no ratio.

The container's hospitals are in Luzhou (5105), whose illustrative regions/5105.yaml gives
lab items a fund share of 0.70; H003 is in Chengdu (5101), where no ratio is given."""

from __future__ import annotations

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Order
from broker.services.reports import regulator, savings
from broker.storage import hospitals
from broker.storage.tables import ledger_entry
from tests import factories as f
from tests.conftest import certify, seed_hospitals
from tests.integration.test_outcomes_and_ledger import accept, check, index, outcome, rows

HB = Order(system="http://loinc.org", code="718-7")
PATIENT_B = f.patient(f.PATIENT_B, mrn="MRN-B", pid="pb")
LUZHOU_AT_HALF = """\
region: "5105"
name: {zh: 泸州市, en: Luzhou}
fund_shares:
  LAB-HGB:
    share: "0.50"
    source: {document: 泸州市医疗保障局 测试用文件（不存在）, issuer: 泸州市医疗保障局}
"""


def _withdrawn(accession: str, **kw: object) -> bytes:
    return f.lab_bundle(
        accession=accession,
        status="entered-in-error",
        last_updated="2026-05-21T10:00:00+08:00",
        version="2",
        **kw,  # type: ignore[arg-type]
    )


def _change_the_catalog(c: Container) -> None:
    """Luzhou's bureau now pays half of a haemoglobin test (an import in the data folder),
    and the container reads the catalog again."""
    regions = c.settings.data_dir / "catalog" / "regions"
    regions.mkdir(parents=True, exist_ok=True)
    (regions / "5105.yaml").write_text(LUZHOU_AT_HALF, encoding="utf-8")
    c._rules = None
    c._provider = None


def _split(entry: dict[str, object]) -> tuple[object, ...]:
    return (
        entry["kind"],
        entry["amount_fen"],
        entry["fund_share"],
        entry["fund_fen"],
        entry["patient_fen"],
    )


async def test_the_split_is_fixed_when_booked_and_reversed_as_booked(
    container: Container,
) -> None:
    c = container
    await certify(c)
    await index(c, f.lab_bundle())  # patient A
    await index(c, f.lab_bundle(accession="ACC-B", pat=PATIENT_B))
    await outcome(c, await check(c, HB), accept(0))  # H002, tier 2: ¥5.40 at 0.70
    (first,) = await rows(c, ledger_entry)
    assert _split(first) == ("saving", 540, "0.70", 378, 162)

    _change_the_catalog(c)
    view = c.reference_rules().catalog.for_region("510521")
    assert view.items["LAB-HGB"].fund_share is not None
    assert str(view.items["LAB-HGB"].fund_share.share) == "0.50"
    async with c.report_figures() as s:
        report = await savings(s, "hospital")
    assert report.as_dict()["totals"]["fund_share"] == "3.78"  # history is not rewritten

    await outcome(c, await check(c, HB, patient=f.PATIENT_B), accept(0))  # now at 0.50
    await index(c, _withdrawn("ACC-1"))  # patient A's result withdrawn: reversed
    entries = sorted(await rows(c, ledger_entry), key=lambda e: int(str(e["id"])))
    assert [_split(e) for e in entries] == [
        ("saving", 540, "0.70", 378, 162),
        ("saving", 540, "0.50", 270, 270),
        ("reversal", -540, "0.70", -378, -162),  # both shares taken back as booked
    ]
    async with c.report_figures() as s:
        totals = (await savings(s, "month")).as_dict()["totals"]
        month = await regulator(s, "2026-05")
    assert (totals["net_saved"], totals["fund_share"], totals["patient_share"]) == (
        "5.40",
        "2.70",
        "2.70",
    )
    assert totals["share_not_given"] == "0.00"
    h002 = next(h for h in month.as_dict()["hospitals"] if h["hospital"] == "H002")
    # May's return holds the two savings (the reversal books into the month it happens).
    assert (h002["fund_share"], h002["patient_share"]) == ("6.48", "4.32")


async def test_without_a_ratio_the_shares_are_null_never_zero(container: Container) -> None:
    c = container
    await seed_hospitals(c, hospitals.Hospital("H003", "Hospital H003", "510104", "3"))
    await certify(c)
    await index(c, f.lab_bundle())
    doctor = Actor("dr-wang", Role.DOCTOR, "H003")
    await outcome(c, await check(c, HB, actor=doctor), accept(0), actor=doctor)
    await index(c, _withdrawn("ACC-1"))
    entries = sorted(await rows(c, ledger_entry), key=lambda e: int(str(e["id"])))
    assert [_split(e) for e in entries] == [
        ("saving", 600, None, None, None),
        ("reversal", -600, None, None, None),
    ]
    async with c.report_figures() as s:
        report = await savings(s, "hospital")
        month = await regulator(s, "2026-05")
    h003 = report.as_dict()["groups"][0]
    assert h003["key"] == "H003" and h003["saved"] == "6.00"
    assert h003["fund_share"] is None and h003["patient_share"] is None
    assert h003["share_not_given"] == "0.00"  # net 0 after the reversal
    csv_h003 = report.as_csv().splitlines()[1].split(",")
    header = report.as_csv().splitlines()[0].split(",")
    assert csv_h003[header.index("fund_share")] == ""  # an empty cell, not 0.00
    categories = {x["category"]: x for x in month.as_dict()["categories"]}
    assert categories["LAB"]["fund_share"] is None
