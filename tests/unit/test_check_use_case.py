"""The recognition check use case on fakes: what it stores, announces and audits, and
what it refuses, without a database (the same flow runs on SQLite and PostgreSQL in
tests/integration and tests/e2e)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from broker.domain.actors import Actor, Role
from broker.domain.catalog import AgeBand, Catalog
from broker.domain.errors import Invalid, NotAllowed, NotFound
from broker.domain.identifiers import RESIDENT_ID_SYSTEM, normalise
from broker.domain.recognition import Decision, Order, PatientContext
from broker.services import checks
from broker.services.checks import CheckRequest, Rules, run_check
from tests.factories import PATIENT_A
from tests.fakes import FakeCheckUnitOfWork
from tests.unit.test_recognition_rules import CATALOG, HOSPITALS, LOINC, ORDER_TIME, POLICY, at, obs

RULES = Rules(CATALOG, POLICY)
HB = Order(LOINC, "718-7")
DOCTOR = Actor("dr.li", Role.DOCTOR, "H001")


def request(**changes: object) -> CheckRequest:
    asked: dict[str, object] = {
        "patient_system": RESIDENT_ID_SYSTEM,
        "patient_value": PATIENT_A,
        "ordering_hospital": "H001",
        "order_time": ORDER_TIME,
        "items": (HB,),
    }
    return CheckRequest(**(asked | changes))  # type: ignore[arg-type]


def known_patient(uow: FakeCheckUnitOfWork) -> str:
    ident = normalise(RESIDENT_ID_SYSTEM, PATIENT_A, hospital="H001")
    assert ident is not None
    uow.people.links[ident.link_key] = "person-1"
    return "person-1"


async def test_a_recognisable_result_is_stored_announced_and_audited_in_one_commit() -> None:
    uow = FakeCheckUnitOfWork(HOSPITALS)
    person = known_patient(uow)
    uow.results.items[person] = [
        replace(
            obs("r-1", "H002", "718-7", at(date(2026, 5, 19))),
            result_version="2026-05-19T00:05:00+00:00",
        )
    ]

    answer = await run_check(uow, RULES, request(), DOCTOR)

    (item,) = answer.items
    assert item.decision.decision is Decision.RECOGNIZABLE
    assert uow.commits == 1
    (stored,) = uow.committed["checks"]
    assert stored.check_id == answer.check_id and stored.person_id == person
    assert stored.items[0].candidate == "r-1"
    assert stored.items[0].candidate_version == "2026-05-19T00:05:00+00:00"
    assert stored.catalog_version and stored.policy_version
    ((kind, key, body, _),) = uow.committed["events"]
    assert (kind, key) == ("check", "H001")
    assert body["items"][0]["decision"] == "RECOGNIZABLE"
    assert PATIENT_A not in str(body) and person not in str(body)  # no identifier, no person
    (read,) = uow.committed["reads"]
    assert read["action"] == "recognition-check" and read["person_id"] == person
    assert read["patient"].value == PATIENT_A  # pseudonymised by the storage adapter


async def test_an_unknown_patient_is_answered_and_the_lookup_still_audited() -> None:
    uow = FakeCheckUnitOfWork(HOSPITALS)
    answer = await run_check(uow, RULES, request(), DOCTOR)
    assert answer.items[0].decision.decision is Decision.NO_PRIOR_RESULT
    (read,) = uow.committed["reads"]
    assert read["person_id"] is None and read["patient"] is not None


# HB with a neonatal band: an item whose rules depend on the patient's age.
BANDED = replace(
    CATALOG,
    items={
        **CATALOG.items,
        "LAB-HGB": replace(
            CATALOG.items["LAB-HGB"], age_bands=(AgeBand("新生儿", "neonate", 0, 28, True),)
        ),
    },
)


@pytest.mark.parametrize(("catalog", "read"), [(BANDED, True), (CATALOG, False)])
async def test_the_birth_date_known_to_the_index_is_read_when_an_item_has_age_rules(
    monkeypatch: pytest.MonkeyPatch, catalog: Catalog, read: bool
) -> None:
    uow = FakeCheckUnitOfWork(HOSPITALS)
    person = known_patient(uow)
    uow.people.born[person] = date(2026, 5, 1)
    asked: list[str] = []
    born = uow.people.birth_date

    async def recording_birth_date(person_id: str) -> date | None:
        asked.append(person_id)
        return await born(person_id)

    monkeypatch.setattr(uow.people, "birth_date", recording_birth_date)
    seen: list[object] = []
    real = checks.decide

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["patient"])
        return real(*args, **kwargs)

    monkeypatch.setattr(checks, "decide", recording)
    await run_check(uow, Rules(catalog, POLICY), request(), DOCTOR)
    # Only an age-banded item needs the age: otherwise the read is skipped (a round trip).
    assert asked == ([person] if read else [])
    assert seen == [PatientContext(birth_date=date(2026, 5, 1) if read else None)]


@pytest.mark.parametrize(
    ("changes", "actor", "refusal"),
    [
        ({"ordering_hospital": "H002"}, DOCTOR, NotAllowed),  # not the caller's hospital
        ({"ordering_hospital": "H404"}, Actor("x", Role.DOCTOR, "H404"), NotFound),
        ({"patient_value": "11010519491231002Y"}, DOCTOR, Invalid),  # bad check character
        ({"patient_value": "  "}, DOCTOR, Invalid),
    ],
)
async def test_refusals_leave_nothing_behind(
    changes: dict[str, object], actor: Actor, refusal: type[Exception]
) -> None:
    uow = FakeCheckUnitOfWork(HOSPITALS)
    with pytest.raises(refusal):
        await run_check(uow, RULES, request(**changes), actor)
    assert uow.commits == 0
    assert uow.committed == {"checks": [], "events": [], "reads": []}
    assert uow.checks.added == [] and uow.audit.reads == []  # rolled back
