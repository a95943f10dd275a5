"""Patient identity across hospitals (issue #17), on SQLite and PostgreSQL: matching at
ingest, the review queue, reversible links, unlink undoing recognitions, and the audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import Conflict
from broker.domain.identity_review import PersonRef, Verdict, parse_person
from broker.domain.ledger import OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.services import identity_review as svc
from broker.services.checks import CheckRequest, run_check
from broker.services.notifications import notices_for
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.storage.identity_tables import identity_link, identity_review
from broker.storage.tables import audit_event, ledger_entry, person, result
from tests import factories as f
from tests.conftest import certify

ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
MRN = "urn:oid:2.16.156.10011.0.1.mrn"
HB = Order(system="http://loinc.org", code="718-7")
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)


def patient(mrn: str, given: str = "晓明", **extra: Any) -> dict[str, Any]:
    """A Patient known by its hospital's MRN only, with demographics."""
    return (
        f.patient(national_id=None, mrn=mrn, pid=f"p-{mrn}")
        | {
            "name": [{"use": "official", "family": "张", "given": [given]}],
            "gender": "female",
            "birthDate": f.PATIENT_A_BORN,
            "telecom": [{"system": "phone", "value": "13800138000"}],
            "address": [{"use": "home", "text": "四川省成都市武侯区人民南路四段12号3栋1单元501室"}],
        }
        | extra
    )


async def index(c: Container, value: bytes, hospital: str) -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


async def rows(c: Container, table: Any) -> list[Any]:
    async with c.sessions() as s:
        return list((await s.execute(select(table))).all())


async def check(c: Container, mrn: str) -> Any:
    answer = await run_check(
        c.check_uow(),
        c.reference_rules(),
        CheckRequest(MRN, mrn, "H002", MAY_20, (HB,)),
        DOCTOR,
    )
    return answer


def found_at_h001(answer: Any) -> bool:
    cand = answer.items[0].decision.candidate
    return cand is not None and cand.hospital == "H001"


async def audit_actions(c: Container) -> list[str]:
    return [r.action for r in await rows(c, audit_event)]


@pytest.fixture
async def near_duplicate(container: Container) -> Container:
    """H001's blood count for 张晓明 (MRN-1); H002 then sends 张晓鸣 (same pinyin), known
    there as MRN-77: a possible match, never linked by itself."""
    await certify(container)
    await index(container, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(container, f.lab_bundle(accession="ACC-77", pat=patient("MRN-77", "晓鸣")), "H002")
    return container


async def test_a_near_duplicate_waits_in_the_review_queue(near_duplicate: Container) -> None:
    c = near_duplicate
    (item,) = await svc.list_reviews(c.identity_uow(), ADMIN)
    assert item["decision"] == "POSSIBLE_MATCH" and item["status"] == "open"
    assert item["hospital"] == "H002" and item["rules_version"]
    levels = {x["field"]: x["level"] for x in item["fields"]}
    assert levels["name"] == "homophone" and levels["birth_date"] == "exact"
    assert all(set(x) == {"field", "level", "weight"} for x in item["fields"])
    # Nothing demographic in the row: levels and weights only.
    (row,) = await rows(c, identity_review)
    assert "张" not in str(tuple(row)) and "13800138000" not in str(tuple(row))
    assert all(p.merged_into is None for p in await rows(c, person))
    assert not found_at_h001(await check(c, "MRN-77"))
    assert "identity-review-list" in await audit_actions(c)


async def test_confirm_links_unlink_undoes_the_recognition(near_duplicate: Container) -> None:
    c = near_duplicate
    (item,) = await svc.list_reviews(c.identity_uow(), ADMIN)
    decided = await svc.decide(c.identity_uow(), ADMIN, item["review_id"], Verdict.CONFIRM)
    assert decided["status"] == "confirmed" and decided["link_id"]
    assert await svc.list_reviews(c.identity_uow(), ADMIN) == []
    with pytest.raises(Conflict):
        await svc.decide(c.identity_uow(), ADMIN, item["review_id"], Verdict.REJECT)

    # Found across the link, and recognised.
    answer = await check(c, "MRN-77")
    assert found_at_h001(answer)
    await record_outcomes(
        c.outcome_uow(),
        c.reference_rules().catalog,
        answer.check_id,
        [OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED))],
        DOCTOR,
    )
    # Rows were not moved: each result stays under its own person.
    owners = {r.hospital_id: r.person_id for r in await rows(c, result)}
    assert owners["H001"] != owners["H002"]

    undone = await svc.unlink_person(
        c.identity_uow(),
        c.identifiers(),
        c.safety_notifier(),
        ADMIN,
        PersonRef(system=MRN, value="MRN-77", hospital="H002"),
    )
    assert undone.recognitions_undone == 1
    assert not found_at_h001(await check(c, "MRN-77"))  # immediately
    (notice,) = await notices_for(c.notice_uow(), DOCTOR)
    assert notice["kind"] == "link-undone" and notice["action"] == "reverse"
    assert notice["new_status"] == "unlinked" and "another person" in notice["message"]["en"]
    kinds = sorted((e.kind, e.amount_fen) for e in await rows(c, ledger_entry))
    assert kinds[0][0] == "reversal" and kinds[0][1] == -kinds[1][1] and kinds[1][0] == "saving"
    (link,) = await rows(c, identity_link)
    assert link.end_reason == "unlinked" and link.ended_by == ADMIN.name
    assert all(p.merged_into is None for p in await rows(c, person))
    actions = await audit_actions(c)
    assert "identity.review.confirm" in actions and "identity.unlink" in actions


async def test_manual_link_then_unlink_by_person_id(near_duplicate: Container) -> None:
    c = near_duplicate
    (item,) = await svc.list_reviews(c.identity_uow(), ADMIN)
    await svc.decide(c.identity_uow(), ADMIN, item["review_id"], Verdict.REJECT)
    a, b = parse_person(item["candidate_id"]), parse_person(item["person_id"])
    made = await svc.link_people(c.identity_uow(), c.identifiers(), ADMIN, a, b)
    assert made.person_id == item["person_id"] and made.into_person_id == item["candidate_id"]
    assert found_at_h001(await check(c, "MRN-77"))
    with pytest.raises(Conflict):
        await svc.link_people(c.identity_uow(), c.identifiers(), ADMIN, a, b)
    # Unlinking by the survivor undoes its one link; no recognition was made through it.
    undone = await svc.unlink_person(
        c.identity_uow(), c.identifiers(), c.safety_notifier(), ADMIN, a
    )
    assert undone.link_id == made.link_id and undone.recognitions_undone == 0
    assert not found_at_h001(await check(c, "MRN-77"))
    assert "identity.link" in await audit_actions(c)
    assert "identity.review.reject" in await audit_actions(c)


async def test_an_exact_duplicate_links_automatically_and_reversibly(
    container: Container,
) -> None:
    await certify(container)
    await index(container, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(container, f.lab_bundle(accession="ACC-77", pat=patient("MRN-77")), "H002")
    (row,) = await rows(container, identity_review)
    assert row.decision == "MATCH" and row.status == "linked"
    (link,) = await rows(container, identity_link)
    assert link.kind == "automatic" and link.ended_at is None
    assert found_at_h001(await check(container, "MRN-77"))
    await svc.unlink_person(
        container.identity_uow(),
        container.identifiers(),
        container.safety_notifier(),
        ADMIN,
        PersonRef(person_id=link.person_id),
    )
    assert not found_at_h001(await check(container, "MRN-77"))


async def test_only_the_platform_admin_reviews_links_and_unlinks(
    near_duplicate: Container,
) -> None:
    c = near_duplicate
    for actor in (DOCTOR, Actor("it.zhou", Role.ADMIN, "H001"), Actor("a", Role.AUDIT, "*")):
        with pytest.raises(Forbidden):
            await svc.list_reviews(c.identity_uow(), actor)
        with pytest.raises(Forbidden):
            await svc.link_people(
                c.identity_uow(), c.identifiers(), actor, parse_person("x"), parse_person("y")
            )
        with pytest.raises(Forbidden):
            await svc.unlink_person(
                c.identity_uow(), c.identifiers(), c.safety_notifier(), actor, parse_person("x")
            )


HEALTH_CARD = "urn:oid:2.16.156.10011.1.19"


async def test_done_when_a_health_card_finds_another_hospitals_result(
    container: Container,
) -> None:
    """Issue #17's "Done when": H001 publishes under its MRN and the resident ID; H002's own
    message names the same resident ID with a health card; a doctor at H002 who knows only
    the health card finds H001's result."""
    await certify(container)
    await index(container, f.lab_bundle(), "H001")  # MRN-1 and PATIENT_A
    at_h002 = f.patient(mrn="H2-MRN-9", pid="p-h2") | {
        "identifier": [
            {"system": f.NATIONAL, "value": f.PATIENT_A},
            {"system": HEALTH_CARD, "value": "HC0012345678"},
        ]
    }
    await index(container, f.lab_bundle(accession="ACC-H2", pat=at_h002), "H002")
    answer = await run_check(
        container.check_uow(),
        container.reference_rules(),
        CheckRequest(HEALTH_CARD, "HC0012345678", "H002", MAY_20, (HB,)),
        DOCTOR,
    )
    assert found_at_h001(answer)
    # A health card never seen is nobody: no guess.
    unknown = await run_check(
        container.check_uow(),
        container.reference_rules(),
        CheckRequest(HEALTH_CARD, "HC0099999999", "H002", MAY_20, (HB,)),
        DOCTOR,
    )
    assert not found_at_h001(unknown)
