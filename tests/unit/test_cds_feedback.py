"""CDS Hooks feedback -> accepted or declined outcomes (with the regulation's reasons)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.cdshooks.cards import DECLINE_REASON_SYSTEM
from broker.cdshooks.feedback import FeedbackRefused, to_outcome
from broker.cdshooks.models import Feedback
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind

SUGGESTION = "e56e1945-20b3-4393-8503-a1a20fd73152"


def feedback(**fields: Any) -> Feedback:
    body = {
        "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
        "outcomeTimestamp": "2026-05-20T01:00:00Z",
        **fields,
    }
    return Feedback.model_validate(body)


def test_accepting_the_suggestion_is_an_accepted_outcome() -> None:
    entry = feedback(outcome="accepted", acceptedSuggestions=[{"id": SUGGESTION}])
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(OutcomeKind.ACCEPTED)


@pytest.mark.parametrize(
    "suggestions", [None, [], [{"id": "not-this-cards-suggestion"}]], ids=["none", "empty", "other"]
)
def test_accepted_needs_this_cards_suggestion(suggestions: object) -> None:
    entry = feedback(outcome="accepted", acceptedSuggestions=suggestions)
    with pytest.raises(FeedbackRefused):
        to_outcome(entry, SUGGESTION)


@pytest.mark.parametrize("reason", [r for r in DeclineReason if r is not DeclineReason.OTHER])
def test_overriding_with_one_of_our_reasons_declines_with_it(reason: DeclineReason) -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={"reason": {"system": DECLINE_REASON_SYSTEM, "code": reason.value}},
    )
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(OutcomeKind.DECLINED, reason)


def test_a_comment_travels_with_the_reason() -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={
            "reason": {"system": DECLINE_REASON_SYSTEM, "code": "KEY_DECISION"},
            "userComment": "术前",
        },
    )
    assert to_outcome(entry, None) == OutcomeInput(
        OutcomeKind.DECLINED, DeclineReason.KEY_DECISION, "术前"
    )


def test_other_takes_the_users_comment_as_its_text() -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={
            "reason": {"system": DECLINE_REASON_SYSTEM, "code": "OTHER"},
            "userComment": "  外院报告字迹不清  ",
        },
    )
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(
        OutcomeKind.DECLINED, DeclineReason.OTHER, "外院报告字迹不清"
    )


def test_other_without_a_comment_is_a_decline_for_an_unknown_reason() -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={"reason": {"system": DECLINE_REASON_SYSTEM, "code": "OTHER"}},
    )
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(
        OutcomeKind.DECLINED, DeclineReason.UNKNOWN
    )


def test_no_reason_at_all_is_a_decline_for_an_unknown_reason() -> None:
    entry = feedback(outcome="overridden")
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(
        OutcomeKind.DECLINED, DeclineReason.UNKNOWN
    )


def test_only_a_comment_is_other_with_that_comment() -> None:
    entry = feedback(outcome="overridden", overrideReason={"userComment": "患者坚持复查"})
    assert to_outcome(entry, SUGGESTION) == OutcomeInput(
        OutcomeKind.DECLINED, DeclineReason.OTHER, "患者坚持复查"
    )


def test_an_ehrs_own_reason_is_other_naming_it() -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={
            "reason": {
                "system": "https://example.com/cds-hooks/override-reason-system",
                "code": "d7ecf885",
                "display": "Contraindicated",
            },
            "userComment": "A comment entered by the clinician.",
        },
    )
    got = to_outcome(entry, SUGGESTION)
    assert got.outcome is OutcomeKind.DECLINED and got.reason is DeclineReason.OTHER
    assert got.reason_text is not None
    assert "Contraindicated" in got.reason_text and "d7ecf885" in got.reason_text
    assert "A comment entered by the clinician." in got.reason_text


def test_a_code_of_another_system_is_not_taken_for_ours() -> None:
    entry = feedback(
        outcome="overridden",
        overrideReason={"reason": {"system": "urn:other", "code": "EMERGENCY"}},
    )
    assert to_outcome(entry, SUGGESTION).reason is DeclineReason.OTHER


def test_long_comments_are_cut() -> None:
    entry = feedback(outcome="overridden", overrideReason={"userComment": "x" * 1500})
    text = to_outcome(entry, SUGGESTION).reason_text
    assert text is not None and len(text) == 1000
