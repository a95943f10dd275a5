"""The hospital profiles a check reads are cached per process and read again as soon as
any writer changes them (triggers bump reference_stamp: migration 0017), on SQLite and
PostgreSQL; a check costs fewer statements once they are cached."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import event, text

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.errors import NotFound
from broker.domain.recognition import Decision, Order
from broker.services.checks import CheckRequest, run_check
from broker.storage import mappings
from tests import factories as f
from tests.conftest import certify, seed_hospitals

HB = Order("http://loinc.org", "718-7")
WATCHED = ("hospital", "hospital_alliance", "certification", "code_mapping")
DOCTOR = Actor("dr-wang", Role.DOCTOR, "H002")


async def check(c: Container) -> Decision:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
        DOCTOR,
    )
    return answer.items[0].decision.decision


@contextmanager
def statements(c: Container) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(c.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(c.engine.sync_engine, "before_cursor_execute", count)


async def test_every_watched_table_has_its_trigger(container: Container) -> None:
    async with container.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = await conn.execute(
                text(
                    "SELECT DISTINCT event_object_table FROM information_schema.triggers "
                    "WHERE trigger_name LIKE '%\\_stamp' AND trigger_schema = current_schema()"
                )
            )
        else:
            rows = await conn.execute(
                text(
                    "SELECT DISTINCT tbl_name FROM sqlite_master "
                    "WHERE type = 'trigger' AND name LIKE '%\\_stamp\\_%' ESCAPE '\\'"
                )
            )
        assert {r[0] for r in rows} == set(WATCHED)


async def test_a_certification_committed_elsewhere_is_seen_by_the_next_check(
    container: Container,
) -> None:
    from tests.integration.test_ingest_service import ingest, msg

    await ingest(container, msg(f.lab_bundle()))  # H001's haemoglobin for patient A
    assert await check(container) is not Decision.RECOGNIZABLE  # H001 not certified yet
    await certify(container, "H001", "HEMATOLOGY")  # another session, as an operator would
    assert await check(container) is Decision.RECOGNIZABLE
    async with container.sessions() as s, s.begin():  # by hand, past the registry service
        await s.execute(text("UPDATE certification SET valid_to = :d"), {"d": date(2026, 1, 2)})
    assert await check(container) is not Decision.RECOGNIZABLE


async def test_a_cached_check_reads_the_profiles_no_more(container: Container) -> None:
    await check(container)
    with statements(container) as first:
        await check(container)
    async with container.sessions() as s, s.begin():
        await s.execute(text("UPDATE hospital SET name = name || ' ' WHERE id = 'H001'"))
    with statements(container) as after_change:
        await check(container)
    with statements(container) as cached:
        await check(container)
    # the person lookup saw the stamps move: hospitals, alliances, certifications, then the
    # person again with the fresh profiles
    assert len(after_change) == len(first) + 4, after_change
    assert len(cached) == len(first)
    assert not any("FROM certification" in s for s in cached)


async def test_a_new_mapping_moves_the_mappings_version(container: Container) -> None:
    reader = container.reference.reader
    async with container.sessions() as s:
        before = await reader(s).mappings_version()
    async with container.sessions() as s, s.begin():
        await mappings.add_mapping(
            s, "H001", "urn:h001:lab", "HB-1", "LAB-HGB", "test", datetime.now(UTC)
        )
    async with container.sessions() as s:
        assert await reader(s).mappings_version() != before


async def test_a_hospital_registered_elsewhere_can_check_at_once(container: Container) -> None:
    """The check starts from the stamps it last saw: an ordering hospital registered since
    (by another process) is not refused as unknown — the stamps are read and it is found."""
    await check(container)  # warm: the profiles cached without H009
    await seed_hospitals(container, "H009")
    answer = await run_check(
        container.check_uow(),
        container.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H009", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
        Actor("dr-new", Role.DOCTOR, "H009"),
    )
    assert answer.items[0].decision.decision is Decision.NO_PRIOR_RESULT


async def test_a_hospital_never_registered_is_still_refused(container: Container) -> None:
    await check(container)
    with pytest.raises(NotFound):
        await run_check(
            container.check_uow(),
            container.rules_provider(),
            CheckRequest(
                f.NATIONAL, f.PATIENT_A, "H404", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)
            ),
            Actor("dr-none", Role.DOCTOR, "H404"),
        )
