"""Two ingest workers (two engines, as `mrb worker --processes 2` has) indexing the same
new patients at the same moment on PostgreSQL: hospital A's messages in one batch, B's in
the other. Each batch links the patients it does not find; whichever commits second meets
the other's links. It is tried again in bulk (not message by message), every message is
indexed, and each patient is one person."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import event, func, select

from broker.bootstrap import Container
from broker.ingest.service import Outcome
from broker.settings import Settings
from broker.storage.tables import person, person_link
from mrb_wire.resident_id import check_character
from tests import factories as f
from tests.conftest import Db

PATIENTS = 12


def _resident_id(n: int) -> str:
    first17 = f"11010519800101{n:03d}"
    return first17 + check_character(first17)


def _batch(hospital: str, order: range) -> list[Any]:
    return [
        f.inbound(
            f.lab_bundle(
                accession=f"{hospital}-ACC-{n}",
                pat=f.patient(_resident_id(n), f"{hospital}-MRN-{n}", pid=f"{hospital}-p{n}"),
            ),
            hospital,
        )
        for n in order
    ]


async def test_two_workers_linking_the_same_new_patients(
    db: Db, settings: Settings, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    if db.kind != "postgres":
        pytest.skip("SQLite has one writer at a time: batches cannot meet mid-transaction")
    other = Container.build(settings)
    links: list[list[str]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO person_link"):
            links.append([row[0] for row in params])

    for engine in (container.engine.sync_engine, other.engine.sync_engine):
        event.listen(engine, "before_cursor_execute", record)
    try:
        with caplog.at_level(logging.INFO, logger="broker.ingest.service"):
            a, b = await asyncio.gather(
                container.ingest_service().process_batch(_batch("H001", range(PATIENTS))),
                other.ingest_service().process_batch(_batch("H002", range(PATIENTS)[::-1])),
            )
    finally:
        await other.close()
    assert {p.outcome for p in a + b} == {Outcome.INDEXED}
    assert "again in bulk" in caplog.text  # they did meet: one batch was tried again
    assert "message by message" not in caplog.text
    # Every batch inserts its links in key order, as the other does: they wait, never
    # deadlock (a deadlock would also be tried again, after PostgreSQL's 1 s detection).
    assert links and all(batch == sorted(batch) for batch in links)
    async with container.sessions() as s:
        people = await s.scalar(
            select(func.count()).select_from(person).where(person.c.merged_into.is_(None))
        )
        national = await s.scalar(
            select(func.count()).select_from(person_link).where(person_link.c.scope == "national")
        )
    assert people == PATIENTS
    assert national == PATIENTS
