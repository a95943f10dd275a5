"""How many statements a recognition check sends, on SQLite and PostgreSQL.

Each statement is a round trip to the database, and round trips are what a check costs
(docs/performance.md): this pins the list, so a new read added to the hot path (or one that
opens a second connection) shows up here, not months later in a benchmark.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import event

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Order
from broker.domain.registry import Certification, CertifyingBody
from broker.services.checks import CheckRequest, run_check
from broker.storage import hospitals
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


async def test_a_check_is_five_statements_on_one_connection(container: Container) -> None:
    c = container
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

    sent: list[str] = []
    connections: set[int] = set()

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:4]))
        connections.add(id(conn.connection.dbapi_connection))

    engine = c.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert await _check(c) == "RECOGNIZABLE"
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The reference stamps, the person, their consent records, their results' items, then
    # the check with its event and audit entry (one statement on PostgreSQL).
    writes = 1 if c.engine.dialect.name == "postgresql" else 3
    assert len(sent) == 4 + writes, sent
    assert len(connections) == 1, sent
