"""Outcomes, the append-only ledger, safety reversals and events, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from broker.api.problems import status_of
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.errors import Refused
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from broker.services.notifications import mark_read, notices_for
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.services.reports import regulator, savings
from broker.storage import ledger
from broker.storage.tables import event_outbox, ledger_entry, notification
from tests import factories as f
from tests.conftest import certify

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
HB = Order(system="http://loinc.org", code="718-7")
PLT = Order(system="http://loinc.org", code="777-3")
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 09:00 in Beijing


async def index(
    c: Container, value: bytes, hospital: str = "H001", expect: str = "indexed"
) -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == expect, p.detail


async def check(
    c: Container, *orders: Order, patient: str = f.PATIENT_A, actor: Actor = DOCTOR
) -> str:
    answer = await run_check(
        c.check_uow(),
        c.reference_rules(),
        CheckRequest(f.NATIONAL, patient, actor.hospital, MAY_20, orders or (HB,)),
        actor,
    )
    return answer.check_id


def accept(index: int = 0) -> OutcomeRequest:
    return OutcomeRequest(index, OutcomeInput(OutcomeKind.ACCEPTED))


def decline(index: int, reason: DeclineReason | None, text_: str | None = None) -> OutcomeRequest:
    return OutcomeRequest(index, OutcomeInput(OutcomeKind.DECLINED, reason, text_))


async def outcome(
    c: Container, check_id: str, *reqs: OutcomeRequest, actor: Actor = DOCTOR, at: datetime = MAY_20
) -> list[object]:
    return list(
        await record_outcomes(
            c.outcome_uow(), c.reference_rules().catalog, check_id, reqs, actor, now=at
        )
    )


async def rows(c: Container, table: object) -> list[dict[str, object]]:
    async with c.sessions() as s:
        return [dict(r._mapping) for r in await s.execute(select(table))]  # type: ignore[call-overload]


@pytest.fixture
async def recognised(container: Container) -> tuple[Container, str]:
    """H001's blood count for patient A, checked at H002 for haemoglobin and platelets."""
    await certify(container)
    await index(container, f.lab_bundle())
    return container, await check(container, HB, PLT)


async def test_accepting_books_the_fee_at_the_ordering_hospitals_tier(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    (done,) = await outcome(c, check_id, accept(0))
    hgb_fee_tier_2 = c.reference_rules().catalog.items["LAB-HGB"].fees["2"]  # H002 is level 2
    assert done.saved == hgb_fee_tier_2 == Decimal("5.40")  # type: ignore[attr-defined]
    (entry,) = await rows(c, ledger_entry)
    assert entry["kind"] == "saving" and entry["amount_fen"] == 540
    assert entry["period"] == "2026-05" and entry["ordering_hospital"] == "H002"
    assert entry["source_hospital"] == "H001" and entry["category"] == "LAB"
    types = [e["type"] for e in await rows(c, event_outbox)]
    assert types == ["check", "accepted"]


async def test_retries_are_idempotent_and_changes_are_conflicts(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    await outcome(c, check_id, accept(0), decline(1, DeclineReason.RAPID_CHANGE))
    again = await outcome(c, check_id, accept(0), decline(1, DeclineReason.RAPID_CHANGE))
    assert [o.replayed for o in again] == [True, True]  # type: ignore[attr-defined]
    with pytest.raises(Refused) as conflict:
        await outcome(c, check_id, decline(0, DeclineReason.PATIENT_REQUEST))
    assert status_of(conflict.value) == 409 and "accepted" in conflict.value.detail
    assert len(await rows(c, ledger_entry)) == 1
    assert [e["type"] for e in await rows(c, event_outbox)] == ["check", "accepted", "declined"]


async def test_concurrent_identical_outcomes_count_once(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    results = await asyncio.gather(
        *(outcome(c, check_id, accept(0)) for _ in range(6)), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sum(not o.replayed for r in results for o in r) == 1  # type: ignore[union-attr, attr-defined]
    assert len(await rows(c, ledger_entry)) == 1


async def test_who_may_record_and_what(recognised: tuple[Container, str]) -> None:
    c, check_id = recognised
    cases = [
        (Actor("dr-wang", Role.DOCTOR, "H001"), [accept(0)], 403),
        (DOCTOR, [accept(5)], 422),
        (DOCTOR, [decline(0, DeclineReason.OTHER)], 422),
        (DOCTOR, [accept(0), accept(0)], 422),
    ]
    for actor, reqs, status in cases:
        with pytest.raises(Refused) as refused:
            await outcome(c, check_id, *reqs, actor=actor)
        assert status_of(refused.value) == status, refused.value.detail
    with pytest.raises(Refused) as unknown:
        await outcome(c, "no-such-check", accept(0))
    assert status_of(unknown.value) == 404
    assert await rows(c, ledger_entry) == []


async def test_nothing_to_accept_when_the_item_was_not_recognisable(container: Container) -> None:
    check_id = await check(container, HB)  # no prior result at all
    with pytest.raises(Refused) as refused:
        await outcome(container, check_id, accept(0))
    assert status_of(refused.value) == 422 and "NO_PRIOR_RESULT" in refused.value.detail


async def test_the_ledger_refuses_updates_and_deletes(recognised: tuple[Container, str]) -> None:
    c, check_id = recognised
    await outcome(c, check_id, accept(0))
    for statement in (
        update(ledger_entry).values(amount_fen=1),
        text("DELETE FROM ledger_entry"),
    ):
        with pytest.raises((DBAPIError, IntegrityError), match="append-only"):
            async with c.sessions() as s, s.begin():
                await s.execute(statement)
    (entry,) = await rows(c, ledger_entry)
    assert entry["amount_fen"] == 540


async def test_a_closed_month_sends_new_entries_to_the_next(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    async with c.sessions() as s, s.begin():
        assert await ledger.close_period(s, "2026-05", "finance-zhao", MAY_20)
        assert not await ledger.close_period(s, "2026-05", "finance-zhao", MAY_20)
    await outcome(c, check_id, accept(0), at=MAY_20)
    (entry,) = await rows(c, ledger_entry)
    assert entry["period"] == "2026-06"


async def test_withdrawal_after_recognition_notifies_and_reverses(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    await outcome(c, check_id, accept(0), decline(1, DeclineReason.CONDITION_CHANGED))
    withdrawn = f.lab_bundle(
        status="entered-in-error", last_updated="2026-05-21T10:00:00+08:00", version="2"
    )
    await index(c, withdrawn)
    await index(c, withdrawn, expect="duplicate")  # replayed: nothing more happens

    entries = sorted(await rows(c, ledger_entry), key=lambda e: str(e["id"]))
    assert [(e["kind"], e["amount_fen"]) for e in entries] == [("saving", 540), ("reversal", -540)]
    assert entries[1]["reverses"] == entries[0]["entry_id"]
    types = [e["type"] for e in await rows(c, event_outbox)]
    assert types == ["check", "accepted", "declined", "reversed"]

    (notice,) = await notices_for(c.notice_uow(), DOCTOR)
    assert notice["kind"] == "withdrawn" and notice["action"] == "reverse"
    assert notice["patient"] == {"system": f.NATIONAL, "value": f.PATIENT_A}
    assert "撤回" in notice["message"]["zh"] and notice["read_at"] is None
    assert await notices_for(c.notice_uow(), Actor("dr-zhang", Role.DOCTOR, "H002")) == []
    await mark_read(c.notice_uow(), DOCTOR, str(notice["notice_id"]))
    assert await notices_for(c.notice_uow(), DOCTOR, unread_only=True) == []

    async with c.report_figures() as s:
        report = await savings(s, "hospital")
    h002 = report.rows["H002"]
    assert (h002.recognitions, h002.saved_fen, h002.reversals, h002.net_fen) == (1, 540, 1, 0)
    assert h002.declines == {"CONDITION_CHANGED": 1}


async def test_a_correction_is_flagged_not_reversed_by_default(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    await outcome(c, check_id, accept(0))
    await index(
        c,
        f.lab_bundle(
            status="corrected", hb=9.8, last_updated="2026-05-21T10:00:00+08:00", version="2"
        ),
    )
    kinds = sorted(e["kind"] for e in await rows(c, ledger_entry))
    assert kinds == ["flag", "saving"]
    (notice,) = await rows(c, notification)
    assert (notice["kind"], notice["action"]) == ("corrected", "flag")


async def test_accepting_a_result_that_changed_since_the_check_is_refused(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    await index(
        c,
        f.lab_bundle(status="cancelled", last_updated="2026-05-21T10:00:00+08:00", version="2"),
    )
    with pytest.raises(Refused) as refused:
        await outcome(c, check_id, accept(0))
    assert status_of(refused.value) == 409 and "cancelled" in refused.value.detail
    async with c.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(ledger_entry))).scalar() == 0


async def test_regulator_report_counts_lookups_and_certifications(
    recognised: tuple[Container, str],
) -> None:
    c, check_id = recognised
    await outcome(c, check_id, accept(0), decline(1, None))
    month = datetime.now(UTC).astimezone().strftime("%Y-%m")  # checks are stamped now
    async with c.report_figures() as s:
        report = await regulator(s, month)
    lab = report.by_category["LAB"]
    assert lab.lookups == 2 and lab.cross_hospital_lookups == 2 and lab.recognizable == 2
    h002 = report.by_hospital["H002"]
    assert h002.lookups == 2 and h002.cross_hospital_lookups == 2
    assert {c_["hospital"] for c_ in report.certified} == {"H001"}
    csv_text = report.as_csv()
    assert csv_text.splitlines()[0].startswith("section,key,name")
    assert any(line.startswith("category,LAB,") for line in csv_text.splitlines())


async def test_a_failing_safety_step_never_costs_the_results(container: Container) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("a bug in the safety code")

    service = container.ingest_service()
    service._on_change = broken  # the seam the container fills with SafetyNotifier
    first = await service.process_batch([f.inbound(f.lab_bundle())])
    amended = f.lab_bundle(status="amended", last_updated="2026-05-21T10:00:00+08:00", version="2")
    second = await service.process_batch([f.inbound(amended)])
    assert [p.outcome.value for p in first + second] == ["indexed", "indexed"]
    assert await rows(container, notification) == []
