"""How many statements a recognition check sends, on SQLite and PostgreSQL.

Each statement is a round trip to the database, and round trips are what a check costs
(docs/performance.md): this pins the list, so a new read added to the hot path (or one that
opens a second connection) shows up here, not months later in a benchmark.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import event

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.consent import ConsentKind
from broker.domain.recognition import Order
from broker.domain.registry import Certification, CertifyingBody
from broker.services.checks import CheckRequest, run_check
from broker.services.consents import NewConsent
from broker.storage import hospitals
from broker.storage.consent_tables import patient_consent
from broker.storage.consents import find_with_consent_flag
from broker.storage.tables import person, person_link
from tests import factories as f

HB = Order(system="http://loinc.org", code="718-7")
DOCTOR = Actor("dr.wang", Role.DOCTOR, "H002")


async def _check(c: Container) -> str:
    answer = await run_check(
        c.check_uow(),
        c.reference_rules(),
        CheckRequest(
            f.NATIONAL,
            f.PATIENT_A,
            "H002",
            datetime.fromisoformat("2026-05-20T09:00:00+08:00"),
            (HB,),
        ),
        DOCTOR,
        now=datetime.fromisoformat("2026-05-20T09:00:00+08:00"),
    )
    return answer.items[0].decision.decision.value


async def _statements_of_a_check(c: Container, expect: str) -> list[str]:
    sent: list[str] = []
    connections: set[int] = set()

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:4]))
        connections.add(id(conn.connection.dbapi_connection))

    engine = c.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert await _check(c) == expect
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(connections) == 1, sent
    return sent


async def _indexed_and_warm(c: Container) -> None:
    async with c.sessions() as s, s.begin():
        await hospitals.certify(
            s,
            Certification(
                "H001",
                "HEMATOLOGY",
                CertifyingBody.PROVINCIAL_EQA,
                date(2026, 1, 1),
                date(2026, 12, 31),
            ),
            reference=None,
        )
    indexed = await c.ingest_service().process_batch([f.inbound(f.lab_bundle(), "H001")])
    assert [p.outcome.value for p in indexed] == ["indexed"]
    assert await _check(c) == "RECOGNIZABLE"  # warm: hospital profiles and rules cached


def _writes(c: Container) -> int:
    """The check with its event and audit entry: one statement on PostgreSQL."""
    return 1 if c.engine.dialect.name == "postgresql" else 3


async def test_a_check_is_two_statements_on_one_connection(container: Container) -> None:
    """The person with the items of theirs that can matter (and the reference stamps,
    confirming the cached hospital profiles and mappings, and whether they have consent
    records: most have none) in one read, then the writes. Three statements on
    PostgreSQL until 2026-12-04, when the person and their items were two reads."""
    c = container
    await _indexed_and_warm(c)
    sent = await _statements_of_a_check(c, "RECOGNIZABLE")
    assert len(sent) == 1 + _writes(c), sent
    assert sent[0].startswith("SELECT stamps."), sent


async def test_consent_records_are_read_only_for_people_who_have_some(
    container: Container,
) -> None:
    c = container
    await _indexed_and_warm(c)
    new = NewConsent(f.NATIONAL, f.PATIENT_A, ConsentKind.OPT_OUT, "FORM-2026-001")
    await c.consent_service().record(Actor("dr.zhao", Role.DOCTOR, "H001"), new)
    # the opt-out is seen at once: the other hospital's result is as if it did not exist
    sent = await _statements_of_a_check(c, "NO_PRIOR_RESULT")
    assert len(sent) == 2 + _writes(c), sent


async def test_the_consent_flag_covers_people_linked_into_the_person(
    container: Container,
) -> None:
    """A record kept under a person later linked into another (merged_into) counts, found
    through either one's identifier; a person without records of anyone reads as none."""
    now = datetime.now(UTC)
    async with container.sessions() as s, s.begin():
        await s.execute(person.insert(), [{"id": "P-SURV", "created_at": now}])
        await s.execute(
            person.insert(),
            [
                {"id": "P-GONE", "created_at": now, "merged_into": "P-SURV"},
                {"id": "P-ALONE", "created_at": now, "merged_into": None},
            ],
        )
        await s.execute(
            person_link.insert(),
            [
                {"pseudonym": p, "person_id": who, "scope": "national", "created_at": now}
                for p, who in (("PS-S", "P-SURV"), ("PS-G", "P-GONE"), ("PS-A", "P-ALONE"))
            ],
        )
        await s.execute(
            patient_consent.insert(),
            [
                {
                    "id": "C-1",
                    "person_id": "P-GONE",
                    "kind": "opt-out",
                    "recorded_by": "dr.zhao",
                    "recorded_role": "doctor",
                    "recorded_hospital": "H001",
                    "recorded_at": now,
                    "evidence": "FORM-1",
                }
            ],
        )
    async with container.sessions() as s:
        assert await find_with_consent_flag(s, "PS-S") == ("P-SURV", True)
        assert await find_with_consent_flag(s, "PS-G") == ("P-SURV", True)
        assert await find_with_consent_flag(s, "PS-A") == ("P-ALONE", False)
        assert await find_with_consent_flag(s, "PS-NONE") is None
