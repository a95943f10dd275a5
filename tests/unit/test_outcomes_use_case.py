"""Outcomes, safety notices and the doctor's notices on fakes: what is stored and booked,
what is announced and audited, what is refused, and that refusals leave nothing behind
(the same flows run on SQLite and PostgreSQL in tests/integration/test_outcomes_and_ledger.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from broker import ports
from broker.domain.actors import Actor, Role
from broker.domain.check_items import StoredCheckItem
from broker.domain.errors import Conflict, Invalid, NotAllowed, NotFound
from broker.domain.ledger import (
    DeclineReason,
    OutcomeInput,
    OutcomeKind,
    SafetyAction,
    SafetyPolicy,
)
from broker.domain.recognition import Decision, Order
from broker.domain.results import ResultChange
from broker.services import notifications
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.services.safety import SafetyNotifier
from tests.fakes import FakeNotices, FakeNoticeUnitOfWork, FakeOutcomeUnitOfWork
from tests.unit.test_recognition_rules import CATALOG, LOINC

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
MAY_21 = datetime(2026, 5, 21, 2, 0, tzinfo=UTC)
CHECK = "check-1"
VERSION = "2026-05-19T00:05:00+00:00"


def item(code: str, loinc: str, result: str, fee: str) -> StoredCheckItem:
    return StoredCheckItem(
        requested=Order(LOINC, loinc),
        decision=Decision.RECOGNIZABLE.value,
        catalog_code=code,
        category="LAB",
        candidate=result,
        candidate_hospital="H001",
        candidate_version=VERSION,
        fee_saved=fee,
    )


def checked() -> FakeOutcomeUnitOfWork:
    """Haemoglobin (r-hb) and platelets (r-plt) from H001, checked at H002."""
    uow = FakeOutcomeUnitOfWork()
    uow.checks.stored[CHECK] = ports.CheckedItems(
        CHECK,
        "H002",
        (item("LAB-HGB", "718-7", "r-hb", "5.40"), item("LAB-PLT", "777-3", "r-plt", "6")),
    )
    for result in ("r-hb", "r-plt"):
        uow.results.current[result] = ports.ResultState("final", VERSION)
    return uow


ACCEPT = OutcomeInput(OutcomeKind.ACCEPTED)


async def record(
    uow: FakeOutcomeUnitOfWork, *given: tuple[int, OutcomeInput], actor: Actor = DOCTOR
) -> list[object]:
    reqs = [OutcomeRequest(i, g) for i, g in given]
    return list(await record_outcomes(uow, CATALOG, CHECK, reqs, actor, now=MAY_20))


class TestRecordOutcomes:
    async def test_an_acceptance_books_the_saving_once_and_a_replay_says_replayed(self) -> None:
        uow = checked()
        (done,) = await record(uow, (0, ACCEPT))
        assert done.saved == Decimal("5.40") and not done.replayed  # type: ignore[attr-defined]
        (entry,) = uow.ledger.entries
        assert (entry.kind, entry.amount_fen, entry.period) == ("saving", 540, "2026-05")
        assert (entry.ordering_hospital, entry.source_hospital) == ("H002", "H001")
        assert entry.result_id == "r-hb" and entry.recorded_by == "dr-li"
        ((kind, key, body, _),) = uow.events.appended
        assert (kind, key, body["amount"], body["entry_id"]) == (
            "accepted",
            "H002",
            "5.40",
            entry.entry_id,
        )

        (again,) = await record(uow, (0, ACCEPT))
        assert again.replayed and again.saved == Decimal("5.40")  # type: ignore[attr-defined]
        assert len(uow.ledger.entries) == 1 and len(uow.events.appended) == 1
        assert uow.commits == 2

    async def test_a_decline_keeps_its_reason_and_books_nothing(self) -> None:
        uow = checked()
        declined = OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER, " new symptoms ")
        (done,) = await record(uow, (1, declined))
        assert (done.reason, done.reason_text, done.saved) == ("OTHER", "new symptoms", None)  # type: ignore[attr-defined]
        (stored,) = uow.outcomes.stored
        assert (stored.outcome, stored.reason, stored.result_id) == ("declined", "OTHER", "r-plt")
        assert uow.ledger.entries == []
        ((kind, _, body, _),) = uow.events.appended
        assert (kind, body["reason"]) == ("declined", "OTHER")

    async def test_a_different_outcome_afterwards_is_a_conflict_that_changes_nothing(self) -> None:
        uow = checked()
        await record(uow, (0, ACCEPT))
        with pytest.raises(Conflict, match="accepted by dr-li"):
            # item 1 is new, but the whole request is refused with item 0
            await record(
                uow, (1, ACCEPT), (0, OutcomeInput(OutcomeKind.DECLINED, DeclineReason.UNKNOWN))
            )
        assert [o.item_index for o in uow.outcomes.stored] == [0]
        assert len(uow.ledger.entries) == 1 and len(uow.events.appended) == 1

    @pytest.mark.parametrize(
        ("actor", "given", "refusal"),
        [
            (Actor("dr-wang", Role.DOCTOR, "H001"), [(0, ACCEPT)], NotAllowed),
            (DOCTOR, [(5, ACCEPT)], Invalid),
            (DOCTOR, [(0, OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER))], Invalid),
            (DOCTOR, [(0, ACCEPT), (0, ACCEPT)], Invalid),
            (DOCTOR, [], Invalid),
        ],
    )
    async def test_refusals_leave_nothing_behind(
        self, actor: Actor, given: list[tuple[int, OutcomeInput]], refusal: type[Exception]
    ) -> None:
        uow = checked()
        with pytest.raises(refusal):
            await record(uow, *(((1, ACCEPT), *given) if given else ()), actor=actor)
        assert (uow.outcomes.stored, uow.ledger.entries, uow.events.appended) == ([], [], [])
        assert uow.commits == 0

    async def test_an_unknown_check_is_not_found(self) -> None:
        with pytest.raises(NotFound):
            await record_outcomes(
                checked(), CATALOG, "no-such-check", [OutcomeRequest(0, ACCEPT)], DOCTOR
            )

    @pytest.mark.parametrize(
        ("now", "said"),
        [
            (ports.ResultState("final", "2026-05-21T02:00:00+00:00"), "now final"),
            (ports.ResultState("entered-in-error", VERSION), "now entered-in-error"),
            (None, "now gone"),
        ],
    )
    async def test_a_result_changed_since_the_check_cannot_be_accepted(
        self, now: ports.ResultState | None, said: str
    ) -> None:
        uow = checked()
        if now is None:
            del uow.results.current["r-hb"]
        else:
            uow.results.current["r-hb"] = now
        with pytest.raises(Conflict, match=said):
            await record(uow, (1, ACCEPT), (0, ACCEPT))
        assert (uow.outcomes.stored, uow.ledger.entries, uow.events.appended) == ([], [], [])

    async def test_a_concurrent_writer_is_read_back_as_a_replay(self) -> None:
        """The retry that lost the race to its original reads what the original stored."""
        uow = checked()
        original = uow.outcomes.add

        async def raced(outcome: ports.Outcome) -> None:
            del uow.outcomes.add  # the next attempt writes as usual
            await original(outcome)  # the concurrent original commits first...
            await uow.commit()
            raise ports.AlreadyWritten("recognition_outcome")  # ...so this insert fails

        uow.outcomes.add = raced  # type: ignore[method-assign]
        (done,) = await record(uow, (0, ACCEPT))
        assert done.replayed  # type: ignore[attr-defined]
        assert len(uow.outcomes.stored) == 1 and uow.ledger.entries == []


def withdrawn(status: str = "entered-in-error", message: str = "m-2") -> ResultChange:
    return ResultChange("r-hb", "H001", status, message)


async def accepted() -> tuple[FakeOutcomeUnitOfWork, FakeNotices]:
    uow = checked()
    await record(uow, (0, ACCEPT), (1, OutcomeInput(OutcomeKind.DECLINED)))
    uow.events.appended.clear()
    return uow, FakeNotices()


NOTIFY = SafetyNotifier(SafetyPolicy(), CATALOG)  # withdrawn: reverse; corrected: flag


class TestSafetyNotifier:
    async def test_a_withdrawal_reverses_the_saving_once_and_tells_the_doctor(self) -> None:
        uow, notices = await accepted()
        await NOTIFY(uow.safety(notices), [withdrawn()], MAY_21)
        await NOTIFY(uow.safety(notices), [withdrawn()], MAY_21)  # the message replayed
        saving, reversal = uow.ledger.entries
        assert (reversal.kind, reversal.amount_fen, reversal.reverses) == (
            "reversal",
            -540,
            saving.entry_id,
        )
        assert (reversal.check_id, reversal.item_index, reversal.result_id) == (CHECK, 0, "r-hb")
        assert reversal.recorded_by == "mrb-safety" and reversal.reason == "result withdrawn"
        ((kind, key, body, _),) = uow.events.appended
        assert (kind, key, body["amount"], body["reverses"]) == (
            "reversed",
            "H002",
            "-5.40",
            saving.entry_id,
        )
        (notice,) = notices.stored
        assert (notice.recipient, notice.hospital_id, notice.kind, notice.action) == (
            "dr-li",
            "H002",
            "withdrawn",
            "reverse",
        )
        assert "撤回" in notice.message.zh

    async def test_a_second_withdrawal_message_notifies_again_but_reverses_once(self) -> None:
        uow, notices = await accepted()
        await NOTIFY(uow.safety(notices), [withdrawn(message="m-2")], MAY_21)
        await NOTIFY(uow.safety(notices), [withdrawn("cancelled", message="m-3")], MAY_21)
        assert [e.kind for e in uow.ledger.entries] == ["saving", "reversal"]
        assert len(notices.stored) == 2

    async def test_a_correction_flags_the_saving_and_it_stands(self) -> None:
        uow, notices = await accepted()
        await NOTIFY(uow.safety(notices), [withdrawn("corrected")], MAY_21)
        saving, flag = uow.ledger.entries
        assert (flag.kind, flag.amount_fen, flag.reverses) == ("flag", 0, saving.entry_id)
        assert [e[0] for e in uow.events.appended] == ["flagged"]
        (notice,) = notices.stored
        assert (notice.kind, notice.action) == ("corrected", "flag")

    async def test_the_policy_may_reverse_corrections(self) -> None:
        uow, notices = await accepted()
        strict = SafetyNotifier(SafetyPolicy(on_corrected=SafetyAction.REVERSE), CATALOG)
        await strict(uow.safety(notices), [withdrawn("corrected")], MAY_21)
        assert [e.kind for e in uow.ledger.entries] == ["saving", "reversal"]

    async def test_results_nobody_accepted_change_nothing(self) -> None:
        uow, notices = await accepted()
        declined_only = ResultChange("r-plt", "H001", "entered-in-error", "m-2")
        await NOTIFY(uow.safety(notices), [declined_only], MAY_21)
        assert len(uow.ledger.entries) == 1 and uow.events.appended == []
        assert notices.stored == []


class TestNotices:
    async def notified(self) -> FakeNotices:
        uow, notices = await accepted()
        await NOTIFY(uow.safety(notices), [withdrawn()], MAY_21)
        notices.checks[CHECK] = ports.NoticedCheck(
            MAY_20,
            "person-1",
            {"system": "resident", "value": "P-A"},
            uow.checks.stored[CHECK].items,
        )
        return notices

    async def test_notices_are_listed_to_their_recipient_only_and_each_read_audited(
        self,
    ) -> None:
        notices = await self.notified()
        uow = FakeNoticeUnitOfWork(notices)
        (notice,) = await notifications.notices_for(uow, DOCTOR)
        assert notice["patient"] == {"system": "resident", "value": "P-A"}
        assert (notice["catalog_code"], notice["kind"], notice["read_at"]) == (
            "LAB-HGB",
            "withdrawn",
            None,
        )
        assert notice["result_fhir"] == "/fhir/DiagnosticReport/r-hb"
        (read,) = uow.audit.reads
        assert (read["action"], read["purpose"], read["person_id"]) == (
            "safety-notice",
            "patient-safety",
            "person-1",
        )
        assert read["detail"] == {"notice_id": notice["notice_id"], "check_id": CHECK}
        assert read["patient"] is None  # the identifier is shown, never written to the audit
        assert uow.commits == 1

        for other in (Actor("dr-zhang", Role.DOCTOR, "H002"), Actor("dr-li", Role.DOCTOR, "H003")):
            other_uow = FakeNoticeUnitOfWork(notices)
            assert await notifications.notices_for(other_uow, other) == []
            assert other_uow.audit.reads == []

    async def test_marking_read_only_ones_own_notice(self) -> None:
        notices = await self.notified()
        (notice,) = await notifications.notices_for(FakeNoticeUnitOfWork(notices), DOCTOR)
        notice_id = str(notice["notice_id"])
        with pytest.raises(NotFound):
            await notifications.mark_read(
                FakeNoticeUnitOfWork(notices), Actor("dr-zhang", Role.DOCTOR, "H002"), notice_id
            )
        assert notices.read == {}
        await notifications.mark_read(FakeNoticeUnitOfWork(notices), DOCTOR, notice_id)
        first = notices.read[notice_id]
        await notifications.mark_read(FakeNoticeUnitOfWork(notices), DOCTOR, notice_id)
        assert notices.read[notice_id] == first  # the first reading time stays
        unread = await notifications.notices_for(
            FakeNoticeUnitOfWork(notices), DOCTOR, unread_only=True
        )
        assert unread == []
