"""Finance and regulator reports over fake figures: the arithmetic, scoping and grouping
the reports do once the storage has summed the ledger and counted the declines."""

from __future__ import annotations

from datetime import UTC, date, datetime

from broker.domain.check_items import StoredCheckItem
from broker.domain.recognition import Order
from broker.domain.registry import Certification, CertifyingBody, HospitalProfile
from broker.ports.reports import OrderedCheck
from broker.services.reports import regulator, savings
from tests.fakes import BookedEntry, FakeReportFigures

H1 = HospitalProfile("H001", "Ruijin", "310101", "3", grade="甲")
H2 = HospitalProfile(
    "H002",
    "Xinhua",
    "310110",
    "3",
    certifications=(
        Certification(
            "H002", "LAB-HGB", CertifyingBody.NATIONAL_EQA, date(2026, 1, 1), date(2026, 12, 31)
        ),
        Certification(
            "H002", "LAB-K", CertifyingBody.NATIONAL_EQA, date(2025, 1, 1), date(2026, 4, 30)
        ),
    ),
)


def _figures() -> FakeReportFigures:
    f = FakeReportFigures({"H002": H2, "H001": H1})
    f.entries += [
        BookedEntry("H001", "LAB-HGB", "2026-04", "LAB", "saving", 2500),
        BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", "saving", 2500),
        BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", "reversal", -2500),
        BookedEntry("H002", "CT-HEAD", "2026-05", "CT", "saving", 18000),
        BookedEntry("H002", "CT-HEAD", "2026-05", "CT", "flag", 0),
        BookedEntry(None, None, "2026-05", None, "saving", 7),  # no key: the "-" group
    ]
    f.declines += [
        BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", reason="clinical-need"),
        BookedEntry("H001", "LAB-K", "2026-05", "LAB", reason="clinical-need"),
        BookedEntry("H002", "CT-HEAD", "2026-06", "CT", reason="patient-refused"),
    ]
    return f


class TestSavings:
    async def test_groups_add_up_to_totals_taken_from_the_ledger(self) -> None:
        report = await savings(_figures(), "hospital")
        h1, h2, unkeyed = report.rows["H001"], report.rows["H002"], report.rows["-"]
        assert (h1.recognitions, h1.saved_fen, h1.reversals, h1.reversed_fen) == (2, 5000, 1, 2500)
        assert h1.net_fen == 2500 and h1.declines == {"clinical-need": 2}
        assert (h2.recognitions, h2.saved_fen, h2.flagged, h2.declined) == (1, 18000, 1, 1)
        assert unkeyed.saved_fen == 7
        t = report.totals
        assert (t.recognitions, t.saved_fen, t.reversed_fen, t.net_fen) == (4, 23007, 2500, 20507)
        assert t.declines == {"clinical-need": 2, "patient-refused": 1}
        assert t.as_dict()["net_saved"] == "205.07"

    async def test_a_period_and_a_hospital_narrow_groups_and_totals_alike(self) -> None:
        report = await savings(
            _figures(), "item", period_from="2026-05", period_to="2026-05", hospital="H001"
        )
        assert report.hospital == "H001" and set(report.rows) == {"LAB-HGB", "LAB-K"}
        assert report.rows["LAB-HGB"].net_fen == 0 and report.rows["LAB-K"].declined == 1
        assert (report.totals.recognitions, report.totals.net_fen, report.totals.declined) == (
            1,
            0,
            2,
        )

    async def test_every_hospital_is_no_scope(self) -> None:
        report = await savings(_figures(), "month", hospital="*")
        assert report.hospital is None
        assert sorted(report.rows) == ["2026-04", "2026-05", "2026-06"]
        assert report.rows["2026-06"].declines == {"patient-refused": 1}


class TestBothSides:
    """A hospital whose results saved others money must see it: the ledger's source side."""

    @staticmethod
    def _figures() -> FakeReportFigures:
        f = FakeReportFigures({"H002": H2, "H001": H1})
        f.entries += [
            BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", "saving", 2500, source="H002"),
            BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", "saving", 2500, source="H002"),
            BookedEntry("H001", "LAB-HGB", "2026-05", "LAB", "reversal", -2500, source="H002"),
            BookedEntry("H003", "CT-HEAD", "2026-05", "CT", "saving", 18000, source="H002"),
            BookedEntry("H002", "CT-HEAD", "2026-04", "CT", "saving", 18000, source="H001"),
        ]
        f.declines += [BookedEntry("H001", "LAB-K", "2026-05", "LAB", reason="clinical-need")]
        return f

    async def test_savings_by_the_source_hospital(self) -> None:
        report = await savings(self._figures(), "source")
        h2 = report.rows["H002"]
        assert (h2.recognitions, h2.saved_fen, h2.reversals, h2.net_fen) == (3, 23000, 1, 20500)
        assert report.rows["H001"].net_fen == 18000
        assert report.totals.net_fen == sum(r.net_fen for r in report.rows.values())

    async def test_a_hospital_scope_on_the_source_side_is_what_its_results_enabled(self) -> None:
        f = self._figures()
        ordering = await savings(f, "item", hospital="H002")
        enabled = await savings(f, "item", hospital="H002", side="source")
        assert ordering.totals.net_fen == 18000  # its own CT order in April
        assert enabled.side == "source" and enabled.as_dict()["side"] == "source"
        assert enabled.totals.net_fen == 20500 and set(enabled.rows) == {"LAB-HGB", "CT-HEAD"}
        assert enabled.totals.declined == 0  # declines belong to the ordering side

    async def test_the_regulator_report_credits_the_hospital_whose_results_were_used(self) -> None:
        report = await regulator(self._figures(), "2026-05")
        h2 = next(h for h in report.as_dict()["hospitals"] if h["hospital"] == "H002")
        assert h2["net_saved"] == "0.00"  # it ordered nothing in May ...
        assert h2["enabled_elsewhere"] == {  # ... but its results saved others 205 yuan
            "its_results_recognised": 3,
            "its_recognitions_reversed": 1,
            "saved_for_others": "230.00",
            "reversed_for_others": "25.00",
            "net_saved_for_others": "205.00",
        }
        h1 = next(h for h in report.as_dict()["hospitals"] if h["hospital"] == "H001")
        assert h1["enabled_elsewhere"]["net_saved_for_others"] == "0.00"  # April's
        header, *rows = report.as_csv().splitlines()
        assert header.endswith(",net_saved_for_others")
        h2_row = next(r for r in rows if r.startswith("hospital,H002,"))
        assert h2_row.endswith(",3,1,230.00,25.00,205.00")
        assert all(len(r.split(",")) == len(header.split(",")) for r in rows)


def _item(category: str | None, decision: str, *found: str) -> StoredCheckItem:
    return StoredCheckItem(
        requested=Order(code="x"),
        decision=decision,
        category=category,
        candidate_hospital=found[0] if found else None,
        other_hospitals=tuple(found[1:]),
    )


class TestRegulator:
    async def test_counts_lookups_of_the_month_per_hospital_and_category(self) -> None:
        f = _figures()
        in_may = datetime(2026, 5, 10, tzinfo=UTC)
        f.recorded += [
            (
                in_may,
                OrderedCheck(
                    "H001",
                    (
                        _item("LAB", "RECOGNIZABLE", "H002"),
                        _item("LAB", "NOT_RECOGNIZABLE", "H001"),  # own result only
                        _item(None, "NO_PRIOR_RESULT"),
                    ),
                ),
            ),
            (
                datetime(2026, 6, 1, tzinfo=UTC),
                OrderedCheck("H002", (_item("CT", "RECOGNIZABLE", "H001"),)),
            ),
            (in_may, OrderedCheck("H999", (_item("CT", "RECOGNIZABLE", "H001"),))),  # unregistered
        ]
        report = await regulator(f, "2026-05")
        assert [h.id for h in report.hospitals] == ["H001", "H002"]
        h1 = report.by_hospital["H001"]
        assert (h1.lookups, h1.cross_hospital_lookups, h1.recognizable) == (3, 1, 1)
        assert (h1.recognitions, h1.reversals, h1.declines) == (1, 1, {"clinical-need": 2})
        assert report.by_hospital["H002"].lookups == 0  # its check is June's
        other = report.by_category["OTHER"]  # the item without a category, the unkeyed entry
        assert (other.lookups, other.saved_fen) == (1, 7)
        assert report.by_category["CT"].lookups == 1 and report.by_category["CT"].flagged == 1
        assert (report.totals.lookups, report.totals.recognizable) == (4, 2)
        assert report.totals.saved_fen == 2500 + 18000 + 7 and report.totals.declined == 2

    async def test_lists_the_certifications_valid_on_any_day_of_the_month(self) -> None:
        may = await regulator(_figures(), "2026-05")
        assert [c["scope"] for c in may.certified] == ["LAB-HGB"]
        april = await regulator(_figures(), "2026-04")
        assert [c["scope"] for c in april.certified] == ["LAB-HGB", "LAB-K"]
        assert april.as_dict()["hospitals"][1]["eqa_certifications"] == 2
