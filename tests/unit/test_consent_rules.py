"""The pure rules of consent, opt-out and purposes of use (issue "Patient rights")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.consent import ConsentKind, ConsentRecord, check_new, view_of
from broker.domain.errors import Invalid, NotAllowed
from broker.domain.purposes import UnknownPurpose, doctor_read
from broker.reference.purposes import shipped_purposes

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def record(kind: ConsentKind = ConsentKind.SENSITIVE, **kw: object) -> ConsentRecord:
    base: dict[str, object] = {
        "id": "c1",
        "person_id": "p1",
        "kind": kind,
        "category": "HIV" if kind is ConsentKind.SENSITIVE else None,
        "recorded_by": "dr.zhao",
        "recorded_hospital": "H001",
        "recorded_at": NOW - 2 * HOUR,
        "evidence": "FORM-1",
        "expires_at": NOW + HOUR,
    }
    return ConsentRecord(**{**base, **kw})  # type: ignore[arg-type]


class TestConsentView:
    def test_a_consent_in_force_shares_its_category(self) -> None:
        view = view_of([record()], NOW)
        assert view.categories == {"HIV"} and not view.opted_out

    def test_expired_or_withdrawn_counts_for_nothing_from_that_instant(self) -> None:
        assert view_of([record(expires_at=NOW)], NOW).categories == frozenset()
        withdrawn = record(withdrawn_at=NOW - HOUR, withdrawn_by="dr.zhao")
        assert view_of([withdrawn], NOW).categories == frozenset()
        assert view_of([withdrawn], NOW - 2 * HOUR + timedelta(minutes=1)).categories == {"HIV"}

    def test_an_opt_out_until_withdrawn(self) -> None:
        opt_out = record(ConsentKind.OPT_OUT, expires_at=None)
        assert view_of([opt_out], NOW + timedelta(days=3650)).opted_out
        assert not view_of([record(ConsentKind.OPT_OUT, withdrawn_at=NOW)], NOW).opted_out

    def test_the_view_says_when_it_last_changed(self) -> None:
        view = view_of([record(withdrawn_at=NOW - HOUR)], NOW)
        assert view.changed_at == NOW - HOUR
        assert not view.unchanged_since(NOW - 2 * HOUR) and view.unchanged_since(NOW)

    def test_a_new_record_needs_evidence_a_known_category_and_for_consent_an_expiry(
        self,
    ) -> None:
        known = ["HIV", "HBV"]
        ok = check_new(ConsentKind.SENSITIVE, "HIV", "FORM-1", NOW + HOUR, NOW, known)
        assert ok is None
        assert check_new(ConsentKind.SENSITIVE, "HIV", " ", NOW + HOUR, NOW, known)
        assert check_new(ConsentKind.SENSITIVE, "XYZ", "F", NOW + HOUR, NOW, known)
        assert check_new(ConsentKind.SENSITIVE, "HIV", "F", None, NOW, known)
        assert check_new(ConsentKind.SENSITIVE, "HIV", "F", NOW - HOUR, NOW, known)
        assert check_new(ConsentKind.OPT_OUT, None, "F", None, NOW, known) is None
        assert check_new(ConsentKind.OPT_OUT, "HIV", "F", None, NOW, known)


class TestPurposes:
    def test_codes_and_words_map_to_hl7_v3(self) -> None:
        table = shipped_purposes()
        assert table.parse(None).v3 == "TREAT"
        assert table.parse("etreat").code == "emergency-treatment"
        assert table.parse("BTG").code == "break-glass"
        assert table.parse("quality-control").v3 == "HQUALIMP"
        assert table.parse("HPAYMT").code == "billing-audit"
        with pytest.raises(UnknownPurpose):
            table.parse("RESEARCH")

    def test_a_doctor_reads_for_treatment_or_an_emergency_only(self) -> None:
        table = shipped_purposes()
        assert doctor_read(table, None).audit == "treatment"
        assert doctor_read(table, None, emergency=True).audit == "emergency-treatment"
        with pytest.raises(NotAllowed):
            doctor_read(table, "HQUALIMP")

    def test_break_glass_needs_an_emergency_and_a_reason(self) -> None:
        table = shipped_purposes()
        plain = doctor_read(table, None, emergency=True)
        assert not plain.break_glass  # an emergency alone does not go beyond consent
        glass = doctor_read(table, None, emergency=True, reason="  unconscious,  no ID ")
        assert glass.break_glass and glass.audit == "break-glass"
        assert glass.break_glass_reason == "unconscious, no ID"
        assert doctor_read(table, "ETREAT", reason="trauma").break_glass
        with pytest.raises(Invalid):
            doctor_read(table, "BTG")
        with pytest.raises(Invalid):
            doctor_read(table, "TREAT", reason="no emergency")
