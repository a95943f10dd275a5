"""CDS Hooks cards: summary length, the delete suggestion, override reasons, escaping."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.cdshooks.cards import (
    DECLINE_REASON_SYSTEM,
    NOTICE,
    RECOGNITION,
    SUGGESTION_LABEL,
    CardFacts,
    card_content,
    card_kind,
    fit,
    issue,
    md,
    override_reasons,
    patient_view_card,
    summary,
)
from broker.domain.ledger import DeclineReason
from broker.domain.recognition import Decision, Text

BASE = "https://mrb.example.cn/"


def facts(**changes: object) -> CardFacts:
    values: dict[str, object] = dict(
        decision=Decision.RECOGNIZABLE,
        item=Text("血红蛋白", "Hemoglobin"),
        explanation=Text(
            "H001 的血红蛋白结果可互认。", "H001's Hemoglobin result is recognisable."
        ),
        hospital="H001",
        hospital_name="泸州市人民医院",
        effective=date(2026, 5, 18),
        status="final",
        summary="Hemoglobin 13.2 g/dL",
        valid_until=date(2026, 5, 25),
        fee_saved=Decimal("5.40"),
        result_url=f"{BASE}fhir/DiagnosticReport/r1",
    )
    values.update(changes)
    return CardFacts(**values)  # type: ignore[arg-type]


def test_a_recognisable_item_gets_an_info_card_with_one_delete_suggestion() -> None:
    content = card_content(facts(), draft_ref="ServiceRequest/hgb-1", base_url=BASE)
    card = issue(content, "card-uuid", "suggestion-uuid")
    assert card["uuid"] == "card-uuid"
    assert card["indicator"] == "info"
    assert card["source"]["label"] == "mrb 检查检验结果互认"
    assert card["source"]["url"] == f"{BASE}doctor"
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    assert suggestion["label"] == SUGGESTION_LABEL
    assert suggestion["uuid"] == "suggestion-uuid"
    assert suggestion["isRecommended"] is True
    (action,) = suggestion["actions"]
    # CDS Hooks 2.0: a delete names its target in resourceId, a relative reference.
    assert action["type"] == "delete"
    assert action["resourceId"] == "ServiceRequest/hgb-1"
    assert "resource" not in action
    assert "ServiceRequest/hgb-1" in action["description"]
    assert {"label", "url", "type"} <= card["links"][0].keys()
    assert [link["url"] for link in card["links"]] == [
        f"{BASE}doctor",
        f"{BASE}fhir/DiagnosticReport/r1",
    ]
    assert all(link["type"] == "absolute" for link in card["links"])
    detail = card["detail"]
    assert "RECOGNIZABLE" in detail and "¥5.40" in detail and "2026-05-25" in detail
    assert "泸州市人民医院" in detail and "H001" in detail
    assert "可互认" in card["summary"] and "¥5.40" in card["summary"]


def test_issue_leaves_the_stored_content_untouched() -> None:
    content = card_content(facts(), draft_ref="ServiceRequest/x", base_url=BASE)
    issue(content, "u1", "s1")
    assert "uuid" not in content and "uuid" not in content["suggestions"][0]
    with pytest.raises(ValueError, match="suggestion"):
        issue(content, "u2", None)


def test_override_reasons_are_the_regulations_grounds_with_a_display() -> None:
    reasons = override_reasons()
    assert [r["code"] for r in reasons] == [
        r.value for r in DeclineReason if r is not DeclineReason.UNKNOWN
    ]
    assert all(r["system"] == DECLINE_REASON_SYSTEM and r["display"] for r in reasons)
    assert {"code": "KEY_DECISION", "system": DECLINE_REASON_SYSTEM}.items() <= next(
        r for r in reasons if r["code"] == "KEY_DECISION"
    ).items()
    content = card_content(facts(), draft_ref="ServiceRequest/x", base_url=BASE)
    assert content["overrideReasons"] == reasons


def test_a_withdrawn_prior_gets_a_warning_without_suggestions() -> None:
    f = facts(decision=Decision.WITHDRAWN, fee_saved=None, valid_until=None)
    content = card_content(f, draft_ref="ServiceRequest/x", base_url=BASE)
    assert content["indicator"] == "warning"
    assert "suggestions" not in content and "selectionBehavior" not in content
    assert "overrideReasons" not in content
    assert "撤回" in content["summary"]
    card = issue(content, "u", None)
    assert card["uuid"] == "u"


@pytest.mark.parametrize(
    ("decision", "kind"),
    [
        (Decision.RECOGNIZABLE, RECOGNITION),
        (Decision.WITHDRAWN, NOTICE),
        (Decision.NO_PRIOR_RESULT, None),
        (Decision.EXPIRED, None),
        (Decision.OUT_OF_SCOPE, None),
        (Decision.NOT_QC_CERTIFIED, None),
        (Decision.PRELIMINARY, None),
        (Decision.EXCLUDED, None),
        (Decision.NOT_IN_CATALOG, None),
    ],
)
def test_only_recognisable_and_withdrawn_priors_get_a_card(
    decision: Decision, kind: str | None
) -> None:
    assert card_kind(decision) == kind
    if kind is None:
        with pytest.raises(ValueError, match="no card"):
            card_content(facts(decision=decision), draft_ref="ServiceRequest/x", base_url=BASE)


@settings(max_examples=200, deadline=None)
@given(
    item=st.text(min_size=0, max_size=300),
    hospital_name=st.one_of(st.none(), st.text(max_size=300)),
    hospital=st.text(min_size=1, max_size=40),
    fee=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**9, places=2)),
    decision=st.sampled_from([Decision.RECOGNIZABLE, Decision.WITHDRAWN]),
)
def test_the_summary_is_always_shorter_than_140_characters(
    item: str, hospital_name: str | None, hospital: str, fee: Decimal | None, decision: Decision
) -> None:
    f = facts(
        item=Text(item, item),
        hospital_name=hospital_name,
        hospital=hospital,
        fee_saved=fee,
        decision=decision,
    )
    text = summary(f)
    assert len(text) < 140
    assert "\n" not in text


def test_fit_cuts_with_an_ellipsis_and_keeps_short_text() -> None:
    assert fit("短 short") == "短 short"
    long = "互" * 300
    cut = fit(long)
    assert len(cut) == 139 and cut.endswith("…")


def test_text_from_hospitals_cannot_inject_markdown() -> None:
    evil = "<img src=x onerror=alert(1)> | **bold** [link](javascript:x)\n# heading"
    escaped = md(evil)
    unescaped = re.compile(r"(?<!\\)[<>|*\[\]#]")
    assert unescaped.search(escaped) is None
    assert "\n" not in escaped
    content = card_content(facts(summary=evil), draft_ref="ServiceRequest/x", base_url=BASE)
    (row,) = [line for line in content["detail"].splitlines() if line.startswith("| 摘要")]
    assert row.count("|") - row.count("\\|") == 3  # the table's own three bars only
    assert unescaped.search(row.split("|", 2)[2].rsplit("|", 1)[0]) is None


def test_patient_view_card_is_quiet_information() -> None:
    card = patient_view_card(
        results=3, hospitals=["H001", "H003"], latest=date(2026, 5, 18), base_url=BASE
    )
    assert card["indicator"] == "info" and "suggestions" not in card
    assert len(card["summary"]) < 140 and "3" in card["summary"]
    assert card["links"][0]["url"] == f"{BASE}doctor"


def test_warnings_make_the_card_a_warning_and_are_named_in_the_detail() -> None:
    newer = Text("注意：H003 有更新的结果（96 g/L）。", "Note: H003 has a newer result (96 g/L).")
    content = card_content(facts(warnings=(newer,)), draft_ref="ServiceRequest/h", base_url=BASE)
    assert content["indicator"] == "warning"
    assert "H003 有更新的结果" in content["detail"] and "newer result (96 g/L)" in content["detail"]
    assert content["suggestions"]  # still recognisable: the receiving doctor decides
    quiet = card_content(facts(), draft_ref="ServiceRequest/h", base_url=BASE)
    assert quiet["indicator"] == "info" and "Warning" not in quiet["detail"]
