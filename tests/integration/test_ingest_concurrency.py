"""Two ingest workers (two engines, as `mrb worker --processes 2` has) indexing the same
new patients at the same moment on PostgreSQL: hospital A's messages in one batch, B's in
the other. The batch that comes second waits for the first to commit (the new people's
locks, broker/storage/new_people_lock.py) and then finds the people it linked: no batch
collides, none is tried again or goes message by message, every message is indexed and
each patient is one person. Without the locks the second batch collided and was tried
again; against a worker that kept linking more of its new people, it ran out of tries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from broker.bootstrap import Container
from broker.ingest.service import Outcome
from broker.settings import Settings
from broker.storage.new_people_lock import BUCKETS, LOCK_CLASS, buckets, wait_for_new_people
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
    assert "again in bulk" not in caplog.text  # the second waited: no collision
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


async def test_new_people_locks_are_bounded_and_end_with_the_transaction(
    db: Db, container: Container
) -> None:
    """A batch of thousands of new identifiers holds at most BUCKETS locks (PostgreSQL's
    shared lock table has 64 entries per connection by default), until it commits."""
    pseudonyms = [f"{n:064x}" for n in range(3000)]
    held = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :c "
        "AND pid = pg_backend_pid()"
    )
    async with container.sessions() as s:
        async with s.begin():
            took = await wait_for_new_people(s, pseudonyms)
            if db.kind != "postgres":
                assert took is False  # one writer at a time: nothing to wait for
                return
            assert took is True
            locks = await s.scalar(held, {"c": LOCK_CLASS})
            assert locks == len(buckets(pseudonyms)) and BUCKETS // 2 < locks <= BUCKETS
        assert await s.scalar(held, {"c": LOCK_CLASS}) == 0
    assert buckets(["b", "a", "a"]) == sorted(set(buckets(["a"]) + buckets(["b"])))
