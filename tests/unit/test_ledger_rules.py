"""Outcome validation, accounting months and what a changed result means (pure rules)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from broker.domain.ledger import (
    REASON_DISPLAY,
    ChangeKind,
    DeclineReason,
    OutcomeInput,
    OutcomeKind,
    OutcomeRefused,
    SafetyAction,
    SafetyPolicy,
    change_kind,
    change_notice,
    ledger_period,
    month_of,
    next_month,
    parse_month,
    to_yuan,
    validate_outcome,
)
from broker.domain.recognition import Decision, Text

CST = timezone(timedelta(hours=8))


class TestOutcomes:
    def test_accept_a_recognisable_item(self) -> None:
        v = validate_outcome("RECOGNIZABLE", OutcomeInput(OutcomeKind.ACCEPTED))
        assert v == OutcomeInput(OutcomeKind.ACCEPTED, None, None)

    @pytest.mark.parametrize("decision", [d.value for d in Decision if d != Decision.RECOGNIZABLE])
    def test_nothing_to_accept_or_decline_unless_recognisable(self, decision: str) -> None:
        for kind in OutcomeKind:
            with pytest.raises(OutcomeRefused, match=decision):
                validate_outcome(decision, OutcomeInput(kind))

    def test_accept_takes_no_reason(self) -> None:
        with pytest.raises(OutcomeRefused, match="no decline reason"):
            validate_outcome(
                "RECOGNIZABLE", OutcomeInput(OutcomeKind.ACCEPTED, DeclineReason.EMERGENCY)
            )

    def test_a_decline_without_reason_is_reason_unknown(self) -> None:
        v = validate_outcome("RECOGNIZABLE", OutcomeInput(OutcomeKind.DECLINED))
        assert v.reason is DeclineReason.UNKNOWN

    def test_other_needs_text(self) -> None:
        for text in (None, "", "   "):
            with pytest.raises(OutcomeRefused, match="reason_text"):
                validate_outcome(
                    "RECOGNIZABLE",
                    OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER, text),
                )
        v = validate_outcome(
            "RECOGNIZABLE",
            OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER, "  术前复查  "),
        )
        assert v.reason_text == "术前复查"

    def test_every_reason_has_chinese_and_english(self) -> None:
        assert set(REASON_DISPLAY) == set(DeclineReason)
        assert all(t.zh and t.en for t in REASON_DISPLAY.values())


class TestMonths:
    def test_month_is_taken_in_china_standard_time(self) -> None:
        # 2026-05-31 16:30 UTC is already 1 June in Beijing.
        assert month_of(datetime(2026, 5, 31, 16, 30, tzinfo=UTC)) == "2026-06"
        assert month_of(datetime(2026, 5, 31, 15, 59, 59, tzinfo=UTC)) == "2026-05"
        assert month_of(date(2026, 12, 31)) == "2026-12"

    def test_next_month_rolls_over_the_year(self) -> None:
        assert next_month("2026-11") == "2026-12"
        assert next_month("2026-12") == "2027-01"

    @pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-5", "26-05", "2026/05", "x"])
    def test_malformed_months(self, bad: str) -> None:
        with pytest.raises(ValueError, match="YYYY-MM"):
            parse_month(bad)

    def test_an_entry_books_into_its_own_month_when_open(self) -> None:
        at = datetime(2026, 5, 20, 9, tzinfo=CST)
        assert ledger_period(at, set()) == "2026-05"
        assert ledger_period(at, {"2026-04"}) == "2026-05"

    def test_a_closed_month_moves_entries_to_the_next_open_one(self) -> None:
        at = datetime(2026, 11, 30, 23, 59, tzinfo=CST)
        assert ledger_period(at, {"2026-11"}) == "2026-12"
        assert ledger_period(at, {"2026-11", "2026-12"}) == "2027-01"

    def test_yuan_round_to_the_fen(self) -> None:
        assert to_yuan("25") == Decimal("25.00")
        assert to_yuan(Decimal("0.125")) == Decimal("0.13")


class TestChanges:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            ("entered-in-error", ChangeKind.WITHDRAWN),
            ("cancelled", ChangeKind.WITHDRAWN),
            ("corrected", ChangeKind.CORRECTED),
            ("amended", ChangeKind.CORRECTED),
            ("final", ChangeKind.CORRECTED),
        ],
    )
    def test_change_kind(self, status: str, kind: ChangeKind) -> None:
        assert change_kind(status) is kind

    def test_default_policy_reverses_withdrawals_and_flags_corrections(self) -> None:
        p = SafetyPolicy()
        assert p.action(ChangeKind.WITHDRAWN) is SafetyAction.REVERSE
        assert p.action(ChangeKind.CORRECTED) is SafetyAction.FLAG
        strict = SafetyPolicy(on_corrected=SafetyAction.REVERSE)
        assert strict.action(ChangeKind.CORRECTED) is SafetyAction.REVERSE

    def test_notice_names_item_hospital_and_status(self) -> None:
        t = change_notice(ChangeKind.WITHDRAWN, Text("血红蛋白", "Hemoglobin"), "H002", "cancelled")
        assert "血红蛋白" in t.zh and "H002" in t.zh and "撤回" in t.zh
        assert "Hemoglobin" in t.en and "withdrawn" in t.en and "cancelled" in t.en
        c = change_notice(ChangeKind.CORRECTED, Text("血红蛋白", "Hemoglobin"), "H002", "amended")
        assert "更正" in c.zh and "corrected" in c.en
