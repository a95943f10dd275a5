"""The check reads the person and the items of theirs that can matter in one statement
(broker/storage/check_uow.py): what it then decides on must be exactly what the separate
read of the items gives, for every row filter, through a merged person's identifier too,
and without a second read."""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

import pytest
from sqlalchemy import event, update

from broker.bootstrap import Container
from broker.domain.identifiers import normalise
from broker.domain.recognition import PriorItem, RowFilter
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.tables import person
from tests import factories as f

FILTERS = [
    RowFilter(frozenset({"718-7"}), imaging=False),
    RowFilter(frozenset({"777-3", "no-such-code"}), imaging=False),
    RowFilter(frozenset(), imaging=True),
    RowFilter(frozenset({"718-7"}), imaging=True),
    RowFilter(frozenset({"no-such-code"}), imaging=False),
]


async def _two_people_merged(c: Container) -> str:
    """PATIENT_A with a lab result (H001) and a CT study (H002); PATIENT_B with a lab
    result at H002, merged into PATIENT_A afterwards. The survivor's id."""
    b = f.patient(f.PATIENT_B, mrn="MRN-2", pid="p2")
    done = await c.ingest_service().process_batch(
        [
            f.inbound(f.lab_bundle(), "H001"),
            f.inbound(f.imaging_bundle(), "H002"),
            f.inbound(f.lab_bundle(accession="ACC-2", pat=b, hb=11.0), "H002"),
        ]
    )
    assert [p.outcome.value for p in done] == ["indexed"] * 3
    async with c.check_uow() as uow:
        a_id = await uow.people.find(_ident(f.PATIENT_A))
        b_id = await uow.people.find(_ident(f.PATIENT_B))
    assert a_id and b_id and a_id != b_id
    async with c.sessions() as s, s.begin():
        await s.execute(update(person).where(person.c.id == b_id).values(merged_into=a_id))
    return a_id


def _ident(value: str) -> Any:
    found = normalise(f.NATIONAL, value, hospital="H002")
    assert found is not None
    return found


def _first_result_only(items: Sequence[PriorItem]) -> Set[str]:
    return {min(i.result_id for i in items)} if items else set()


@pytest.mark.parametrize("rows", FILTERS, ids=lambda r: f"{sorted(r.codes)}-{r.imaging}")
@pytest.mark.parametrize("matters", [None, _first_result_only], ids=["all", "first"])
async def test_the_items_read_with_the_person_are_those_read_alone(
    container: Container, rows: RowFilter, matters: Any
) -> None:
    c = container
    survivor = await _two_people_merged(c)
    protector = Protector(c.cipher, c.pseudonyms)
    async with c.sessions() as s:
        alone = await person_items(s, survivor, protector, matters, rows)
    assert {i.hospital for i in await _all(c, survivor)} == {"H001", "H002"}

    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = c.engine.sync_engine
    for patient in (f.PATIENT_A, f.PATIENT_B):  # the merged person's identifier too
        sent.clear()
        event.listen(engine, "before_cursor_execute", record)
        try:
            async with c.check_uow() as uow:
                found = await uow.people.find(_ident(patient), rows)
                assert found == survivor
                together = await uow.results.prior_items(found, matters, rows)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert together == alone
        assert len(sent) == 1, sent  # the items came with the person


async def _all(c: Container, person_id: str) -> list[PriorItem]:
    async with c.sessions() as s:
        return await person_items(s, person_id, Protector(c.cipher, c.pseudonyms))


async def test_other_reads_of_the_items_are_not_answered_from_the_prefetch(
    container: Container,
) -> None:
    """Another person, or another filter, is read afresh; a prefetch serves one call."""
    c = container
    survivor = await _two_people_merged(c)
    hb, imaging = FILTERS[0], FILTERS[2]
    async with c.check_uow() as uow:
        assert await uow.people.find(_ident(f.PATIENT_A), hb) == survivor
        by_imaging = await uow.results.prior_items(survivor, None, imaging)
        by_hb = await uow.results.prior_items(survivor, None, hb)
        again = await uow.results.prior_items(survivor, None, hb)
    assert {i.resource_type for i in by_imaging} >= {"ImagingStudy"}
    assert any(c.code == "718-7" for i in by_hb for c in i.codings)
    assert again == by_hb


async def test_an_unknown_patient_or_one_without_items(container: Container) -> None:
    c = container
    await _two_people_merged(c)
    async with c.check_uow() as uow:
        assert await uow.people.find(_ident(f.resident_id("1990-01-01")), FILTERS[0]) is None
    # A person linked but with nothing the filter admits: found, and no items.
    async with c.check_uow() as uow:
        found = await uow.people.find(_ident(f.PATIENT_A), FILTERS[-1])
        assert found is not None
        assert await uow.results.prior_items(found, None, FILTERS[-1]) == []
