"""The doctor's notice when a recognition's patient link is undone (issue #17): its own
kind (`link-undone`), its own words in Chinese and English, and its saving always
reversed, on the fakes of tests/unit/test_outcomes_use_case.py (the same flow on SQLite
and PostgreSQL: tests/integration/test_identity_review.py)."""

from __future__ import annotations

from broker.domain.ledger import ChangeKind, SafetyAction, SafetyPolicy, change_notice
from broker.domain.recognition import Text
from broker.domain.results import ResultChange
from broker.services.safety import SafetyNotifier
from tests.unit.test_outcomes_use_case import MAY_21, NOTIFY, accepted, withdrawn
from tests.unit.test_recognition_rules import CATALOG

HB = Text("血红蛋白", "Hemoglobin")
UNLINKED = ResultChange("r-hb", "H001", "unlinked", "unlink:link-1")


def test_the_kind_is_link_undone() -> None:
    assert ChangeKind.LINK_UNDONE.value == "link-undone"


def test_the_notice_says_the_result_belongs_to_another_person() -> None:
    t = change_notice(ChangeKind.LINK_UNDONE, HB, "H001", "unlinked")
    assert "血红蛋白" in t.zh and "H001" in t.zh
    assert "身份关联已被撤销" in t.zh and "另一位患者" in t.zh and "撤回" not in t.zh
    assert "Hemoglobin" in t.en and "H001" in t.en
    assert "patient link" in t.en and "undone" in t.en and "another person" in t.en
    assert "withdrawn" not in t.en and "unlinked" not in t.en


def test_a_link_undone_is_always_reversed_whatever_the_withdrawal_policy() -> None:
    for policy in (SafetyPolicy(), SafetyPolicy(SafetyAction.FLAG, SafetyAction.FLAG)):
        assert policy.action(ChangeKind.LINK_UNDONE) is SafetyAction.REVERSE


async def test_undo_notifies_link_undone_and_reverses_the_saving_once() -> None:
    uow, notices = await accepted()
    (outcome,) = await uow.safety(notices).outcomes.accepted_for(["r-hb"])
    await NOTIFY.undo(uow.safety(notices), outcome, UNLINKED, MAY_21)
    await NOTIFY.undo(uow.safety(notices), outcome, UNLINKED, MAY_21)  # once per unlink
    saving, reversal = uow.ledger.entries
    assert (reversal.kind, reversal.amount_fen, reversal.reverses) == (
        "reversal",
        -540,
        saving.entry_id,
    )
    assert reversal.reason == "patient link undone" and reversal.recorded_by == "mrb-safety"
    ((event, key, body, _),) = uow.events.appended
    assert (event, key, body["amount"], body["reverses"]) == (
        "reversed",
        "H002",
        "-5.40",
        saving.entry_id,
    )
    assert (body["change"], body["new_status"]) == ("link-undone", "unlinked")
    (notice,) = notices.stored
    assert (notice.recipient, notice.kind, notice.action, notice.new_status) == (
        "dr-li",
        "link-undone",
        "reverse",
        "unlinked",
    )
    assert "另一位患者" in notice.message.zh and "another person" in notice.message.en


async def test_undo_reverses_even_under_a_flag_only_policy() -> None:
    uow, notices = await accepted()
    lenient = SafetyNotifier(SafetyPolicy(SafetyAction.FLAG, SafetyAction.FLAG), CATALOG)
    (outcome,) = await uow.safety(notices).outcomes.accepted_for(["r-hb"])
    await lenient.undo(uow.safety(notices), outcome, UNLINKED, MAY_21)
    assert [e.kind for e in uow.ledger.entries] == ["saving", "reversal"]
    (notice,) = notices.stored
    assert (notice.kind, notice.action) == ("link-undone", "reverse")


async def test_a_withdrawal_after_an_unlink_notifies_again_but_reverses_once() -> None:
    uow, notices = await accepted()
    (outcome,) = await uow.safety(notices).outcomes.accepted_for(["r-hb"])
    await NOTIFY.undo(uow.safety(notices), outcome, UNLINKED, MAY_21)
    await NOTIFY(uow.safety(notices), [withdrawn()], MAY_21)
    assert [e.kind for e in uow.ledger.entries] == ["saving", "reversal"]
    assert [n.kind for n in notices.stored] == ["link-undone", "withdrawn"]
