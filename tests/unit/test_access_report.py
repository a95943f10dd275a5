"""The access report's pure parts: its wording (zh/en), its period, its CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from broker.domain.actors import Role
from broker.domain.errors import Invalid
from broker.domain.recognition import Decision, Text
from broker.fhir import balp
from broker.ports.access_report import AuditedRead, ItemOutcome, ResultInfo
from broker.services.access_report import (
    ACTIONS,
    DECISIONS,
    HEADERS,
    PURPOSES,
    ROLES,
    AccessReport,
    RecognitionUse,
    ReportEntry,
    ResultRead,
    parse_day,
    parse_identifier,
    period,
    words,
)

AT = datetime(2026, 5, 20, 1, 30, tzinfo=UTC)  # 09:30 in Beijing
NAMES = {"H001": "泸州市人民医院", "H002": "叙永县医院"}


def test_every_audited_patient_action_is_worded_in_both_languages() -> None:
    patient_actions = {*balp.KINDS} - {"audit.read"} | {"rate-limit-break-glass"}
    patient_actions |= {"consent.record", "consent.withdraw", "consent.read"}
    for action in patient_actions:
        assert action in ACTIONS, action
    for table in (ACTIONS, PURPOSES, ROLES, DECISIONS):
        for code, text in table.items():
            assert text.zh and text.en and text.zh != text.en, code


def test_every_purpose_role_and_decision_has_words() -> None:
    assert set(balp.PURPOSES) <= set(PURPOSES)
    assert {r.value for r in Role} == set(ROLES)
    assert {d.value for d in Decision} == set(DECISIONS)
    assert words(ACTIONS, "fhir-read") == Text("查阅检验检查结果", "read a test result (FHIR)")
    assert words(ACTIONS, "something-newer") == Text("something-newer", "something-newer")


class TestThePeriod:
    def test_by_default_the_twelve_months_up_to_today(self) -> None:
        assert period(None, None, date(2026, 12, 3)) == (date(2025, 12, 4), date(2026, 12, 4))
        assert period(None, None, date(2028, 2, 28)) == (date(2027, 2, 28), date(2028, 2, 29))

    def test_one_bound_given(self) -> None:
        assert period(date(2026, 1, 1), None, date(2026, 6, 1)) == (
            date(2026, 1, 1),
            date(2026, 6, 2),
        )
        assert period(None, date(2024, 3, 1), date(2026, 6, 1)) == (
            date(2023, 3, 1),
            date(2024, 3, 1),
        )

    def test_an_empty_or_too_long_period_is_refused(self) -> None:
        with pytest.raises(Invalid, match="before"):
            period(date(2026, 5, 1), date(2026, 5, 1), date(2026, 6, 1))
        with pytest.raises(Invalid, match="5 years"):
            period(date(2020, 1, 1), date(2025, 1, 2), date(2026, 6, 1))
        assert period(date(2020, 1, 1), date(2025, 1, 1), date(2026, 6, 1))[0] == date(2020, 1, 1)

    def test_days_and_identifiers_are_read_strictly(self) -> None:
        assert parse_day("2026-05-20", "from") == date(2026, 5, 20)
        assert parse_day(None, "from") is None
        for bad in ("2026-5-20", "20260520", "2026-02-30", "2026-05-20T00:00"):
            with pytest.raises(Invalid, match="from"):
                parse_day(bad, "from")
        assert parse_identifier(" urn:oid:1 | 123 ") == ("urn:oid:1", "123")
        for bad in (None, "", "123", "|123", "urn:oid:1|"):
            with pytest.raises(Invalid, match=r"system\|value"):
                parse_identifier(bad)


def _read(action: str, purpose: str, **detail: object) -> AuditedRead:
    return AuditedRead(1, AT, "dr.li", "doctor", "H002", action, purpose, None, "P-1", detail)


def _use(outcome: ItemOutcome | None) -> RecognitionUse:
    result = ResultRead("DiagnosticReport/R-1", ResultInfo("R-1", "H001", "DiagnosticReport", AT))
    return RecognitionUse(
        "C-1",
        0,
        "H002",
        AT,
        "LAB-HGB",
        Text("血红蛋白", "Haemoglobin"),
        "RECOGNIZABLE",
        result,
        outcome,
    )


class TestTheAnswer:
    def test_accepted_declined_reversed_unanswered(self) -> None:
        assert _use(None).answer().zh == "医生未答复"
        accepted = ItemOutcome("C-1", 0, "accepted", None, AT)
        assert _use(accepted).answer().en == "accepted: not tested again"
        reversed_ = ItemOutcome("C-1", 0, "accepted", None, AT, reversed=True)
        assert "冲回" in _use(reversed_).answer().zh
        declined = ItemOutcome("C-1", 0, "declined", "EMERGENCY", AT)
        assert _use(declined).answer().zh == "医生未采纳，重新检查（急诊、急救）"
        unknown = ItemOutcome("C-1", 0, "declined", "SOMETHING-NEWER", AT)
        assert _use(unknown).answer().en == "declined: tested again"


def _report() -> AccessReport:
    use = _use(ItemOutcome("C-1", 0, "accepted", None, AT))
    entries = (
        ReportEntry(_read("recognition-check", "order-entry"), (use.candidate,), None, (use,)),
        ReportEntry(
            _read("fhir-search", "treatment", returned=2),
            note=Text("返回 2 项资源；未记录具体是哪些", "2 resources returned; not which"),
        ),
        ReportEntry(
            AuditedRead(2, AT, "=cmd()", "audit", "*", "patient-access-report", "patient-request",
                        "ab" * 32, "P-1", {}),
        ),
    )  # fmt: skip
    return AccessReport("P-1", date(2026, 1, 1), date(2027, 1, 1), AT, entries, NAMES)


class TestTheTable:
    def test_the_csv_has_a_bom_a_chinese_header_and_chinese_cells(self) -> None:
        text = _report().as_csv()
        assert text.startswith("\ufeff")
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
        assert (
            rows[0]
            == HEADERS["zh"]
            == ["时间", "访问者", "角色", "医院", "操作", "目的", "结果", "互认"]
        )
        check, search, own = rows[1:]
        assert check[:6] == [
            "2026-05-20 09:30:00",
            "dr.li",
            "医生",
            "叙永县医院 (H002)",
            "互认检查",
            "开具检查检验",
        ]
        assert check[6] == "泸州市人民医院 2026-05-20 DiagnosticReport/R-1"
        assert check[7] == "叙永县医院 2026-05-20 血红蛋白 可互认 医生已采纳，未重复检查"
        assert search[6] == "返回 2 项资源；未记录具体是哪些" and search[7] == ""
        assert own[1] == "'=cmd()"  # never a spreadsheet formula
        assert (own[3], own[4], own[5]) == ("平台", "生成本人访问报告", "应患者本人申请")

    def test_english_rows(self) -> None:
        check = _report().rows("en")[0]
        assert check[2:6] == ["doctor", "叙永县医院 (H002)", "recognition check", "ordering a test"]
        assert check[7].endswith("Haemoglobin recognisable accepted: not tested again")

    def test_json_names_both_times_and_both_languages(self) -> None:
        body = _report().as_dict()
        first = body["entries"][0]
        assert (first["at"], first["at_local"]) == (
            "2026-05-20T01:30:00+00:00",
            "2026-05-20T09:30:00+08:00",
        )
        assert first["action"] == {
            "code": "recognition-check",
            "zh": "互认检查",
            "en": "recognition check",
        }
        assert body["recognitions"][0]["answer"]["zh"] == "医生已采纳，未重复检查"
        assert body["entries"][2]["hospital"] == {"id": "*", "name": "平台", "platform": True}
        assert "next report" in body["note"]["en"]

    def test_the_fhir_bundle_names_the_person_never_the_pseudonym(self) -> None:
        bundle = _report().as_fhir("http://mrb.test/fhir")
        assert bundle["type"] == "collection" and len(bundle["entry"]) == 3
        assert "ab" * 32 not in str(bundle)
        check = bundle["entry"][0]["resource"]
        whats = [e.get("what") for e in check["entity"]]
        assert {"reference": "Patient/P-1"} in whats
        assert {"reference": "DiagnosticReport/R-1"} in whats
