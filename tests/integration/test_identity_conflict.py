"""A person never holds two numbers of one national system (broker.domain.linking.conflict,
migration 0027): a sender that reuses a hospital identifier for another patient gets
PATIENT_IDENTITY_CONFLICT, and neither patient sees the other's results. SQLite and
PostgreSQL, through the ingest service."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.errors import Conflict
from broker.domain.identifiers import normalise
from broker.domain.identity_review import PersonRef
from broker.domain.rejections import RejectCode
from broker.ingest.service import Outcome, Processed
from broker.services import identity_review
from broker.storage import identity
from broker.storage.people import People
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.tables import person, person_link, rejection
from tests import factories as f

B = f.PATIENT_B


async def ingest(c: Container, *values: bytes, hospital: str = "H001") -> list[Processed]:
    return await c.ingest_service().process_batch([f.inbound(v, hospital) for v in values])


async def person_of(
    c: Container, value: str, system: str = f.NATIONAL, hospital: str = "H001"
) -> str | None:
    ident = normalise(system, value, hospital=hospital)
    assert ident is not None
    async with c.sessions() as s:
        return await People(s, c.pseudonyms).find(ident)


async def results_of(c: Container, person_id: str) -> int:
    """How many results a check for this person reads."""
    async with c.sessions() as s:
        items = await person_items(s, person_id, Protector(c.cipher, c.pseudonyms))
    return len({i.result_id for i in items})


async def counts(c: Container) -> tuple[int, int, int]:
    async with c.sessions() as s:
        people = (await s.execute(select(func.count()).select_from(person))).scalar_one()
        links = (await s.execute(select(func.count()).select_from(person_link))).scalar_one()
        refused = (await s.execute(select(func.count()).select_from(rejection))).scalar_one()
    return people, links, refused


def lab(accession: str, national_id: str | None, *, pid: str, mrn: str | None, day: int) -> bytes:
    return f.lab_bundle(
        accession=accession,
        pat=f.patient(national_id=national_id, mrn=mrn, pid=pid),
        effective=f"2026-05-{day:02d}T08:00:00+08:00",
    )


A_RESULT = lab("A-1", f.PATIENT_A, pid="p1", mrn=None, day=1)
# Another patient (another resident ID) sent under the same Patient.id "p1".
B_UNDER_P1 = lab("B-1", B, pid="p1", mrn=None, day=2)


class TestReusedIdentifier:
    async def test_in_a_later_batch_is_refused_and_links_nothing(
        self, container: Container
    ) -> None:
        await ingest(container, A_RESULT)
        before = await counts(container)
        (refused,) = await ingest(container, B_UNDER_P1)
        assert refused.outcome is Outcome.REJECTED
        assert refused.code is RejectCode.PATIENT_IDENTITY_CONFLICT
        assert "Patient.id" in (refused.detail or "") and B not in (refused.detail or "")
        people, links, rejections = await counts(container)
        assert (people, links, rejections) == (before[0], before[1], before[2] + 1)
        assert await person_of(container, B) is None
        a = await person_of(container, f.PATIENT_A)
        assert a is not None and await results_of(container, a) == 1  # A's own

    async def test_in_the_same_batch_is_refused_too(self, container: Container) -> None:
        first, second = await ingest(container, A_RESULT, B_UNDER_P1)
        assert first.outcome is Outcome.INDEXED
        assert second.code is RejectCode.PATIENT_IDENTITY_CONFLICT
        assert await person_of(container, B) is None

    async def test_twelve_patients_under_one_patient_id_stay_twelve_apart(
        self, container: Container
    ) -> None:
        """What a sender numbering every Patient "p1" did before the rule: one person
        holding twelve resident IDs, each patient's check showing the other eleven's."""
        ids = [f.resident_id("1980-01-01", seq=n) for n in range(12)]
        sent = [lab(f"S-{n}", rid, pid="p1", mrn=None, day=n + 1) for n, rid in enumerate(ids)]
        processed = await ingest(container, *sent)
        assert [p.outcome for p in processed] == [Outcome.INDEXED] + [Outcome.REJECTED] * 11
        assert await person_of(container, ids[0]) is not None
        assert [await person_of(container, rid) for rid in ids[1:]] == [None] * 11

    async def test_a_reused_mrn_is_refused_like_a_patient_id(self, container: Container) -> None:
        await ingest(container, lab("A-1", f.PATIENT_A, pid="a", mrn="M-7", day=1))
        (refused,) = await ingest(container, lab("B-1", B, pid="b", mrn="M-7", day=2))
        assert refused.code is RejectCode.PATIENT_IDENTITY_CONFLICT

    async def test_a_merge_of_two_people_with_different_numbers_is_refused(
        self, container: Container
    ) -> None:
        """A and B are each indexed with their own MRN; a message joining A's number with
        B's MRN would merge them."""
        await ingest(
            container,
            lab("A-1", f.PATIENT_A, pid="a", mrn="M-A", day=1),
            lab("B-1", B, pid="b", mrn="M-B", day=2),
        )
        before = await counts(container)
        (refused,) = await ingest(container, lab("X-1", f.PATIENT_A, pid="x", mrn="M-B", day=3))
        assert refused.code is RejectCode.PATIENT_IDENTITY_CONFLICT
        assert (await counts(container))[:2] == before[:2]
        a, b = await person_of(container, f.PATIENT_A), await person_of(container, B)
        assert a is not None and b is not None and a != b
        async with container.sessions() as s:
            merged = await s.execute(select(person.c.id).where(person.c.merged_into.is_not(None)))
        assert merged.all() == []

    async def test_refused_then_replayed_after_the_sender_fixed_its_ids(
        self, container: Container
    ) -> None:
        await ingest(container, A_RESULT)
        (refused,) = await ingest(container, B_UNDER_P1)
        assert refused.code is RejectCode.PATIENT_IDENTITY_CONFLICT
        (fixed,) = await ingest(container, lab("B-1", B, pid="p2", mrn=None, day=2))
        assert fixed.outcome is Outcome.INDEXED
        a, b = await person_of(container, f.PATIENT_A), await person_of(container, B)
        assert a is not None and b is not None and a != b


ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
MRN = "urn:oid:2.16.156.10011.0.1.mrn"  # tests.factories.patient's MRN system


async def test_a_number_reaching_a_linked_group_that_holds_another_is_refused(
    container: Container,
) -> None:
    """Patient X (no resident ID at H002) was linked into A by review or matching; X's
    own resident ID arriving later proves they are two people: refused, until a platform
    admin undoes the link; the same message then indexes."""
    c = container
    await ingest(c, lab("A-1", f.PATIENT_A, pid="a", mrn="M-A", day=1))
    await ingest(c, lab("X-1", None, pid="x", mrn="M-X", day=2), hospital="H002")
    a, x = await person_of(c, f.PATIENT_A), await person_of(c, "M-X", MRN, "H002")
    assert a is not None and x is not None and a != x
    await identity_review.link_people(
        c.identity_uow(), c.identifiers(), ADMIN, PersonRef(person_id=a), PersonRef(person_id=x)
    )
    x_with_b = lab("X-2", B, pid="x", mrn="M-X", day=3)
    (refused,) = await ingest(c, x_with_b, hospital="H002")
    assert refused.code is RejectCode.PATIENT_IDENTITY_CONFLICT
    assert "mrb patient unlink" in (refused.detail or "")
    assert await person_of(c, B) is None
    await identity_review.unlink_person(
        c.identity_uow(), c.identifiers(), c.safety_notifier(), ADMIN, PersonRef(person_id=x)
    )
    (indexed,) = await ingest(c, x_with_b, hospital="H002")
    assert indexed.outcome is Outcome.INDEXED
    assert await person_of(c, B) == x


async def test_a_link_between_holders_of_two_numbers_is_refused(container: Container) -> None:
    """By a platform admin (or a review's confirmation): 409, nothing linked; the automatic
    link at ingest asks the same question (identity.numbers_clash) and leaves the pair to
    review instead."""
    c = container
    await ingest(c, lab("A-1", f.PATIENT_A, pid="a", mrn=None, day=1))
    await ingest(c, lab("B-1", B, pid="b", mrn=None, day=2))
    await ingest(c, lab("X-1", None, pid="x", mrn="M-X", day=3), hospital="H002")
    a, b = await person_of(c, f.PATIENT_A), await person_of(c, B)
    x = await person_of(c, "M-X", MRN, "H002")
    assert a and b and x
    async with c.sessions() as s:
        assert await identity.numbers_clash(s, a, b) == f.NATIONAL
        assert await identity.numbers_clash(s, a, x) is None
    with pytest.raises(Conflict) as refused:
        await identity_review.link_people(
            c.identity_uow(), c.identifiers(), ADMIN, PersonRef(person_id=a), PersonRef(person_id=b)
        )
    assert refused.value.title == "Different people"
    async with c.sessions() as s:
        assert (
            await s.execute(select(person.c.id).where(person.c.merged_into.is_not(None)))
        ).all() == []
    # X (no number) may join A; then B may not join their group either.
    await identity_review.link_people(
        c.identity_uow(), c.identifiers(), ADMIN, PersonRef(person_id=a), PersonRef(person_id=x)
    )
    async with c.sessions() as s:
        assert await identity.numbers_clash(s, a, b) == f.NATIONAL


class TestStillLinked:
    async def test_one_patient_keeps_linking_across_hospitals_and_identifiers(
        self, container: Container
    ) -> None:
        await ingest(container, lab("A-1", f.PATIENT_A, pid="a", mrn="M-A", day=1))
        await ingest(container, lab("A-2", None, pid="a", mrn="M-A", day=2))
        await ingest(container, lab("A-3", f.PATIENT_A, pid="z", mrn="X", day=3), hospital="H002")
        a = await person_of(container, f.PATIENT_A)
        assert a is not None and await results_of(container, a) == 3

    async def test_a_person_without_a_number_still_merges_into_one_with_one(
        self, container: Container
    ) -> None:
        await ingest(container, lab("M-1", None, pid="m", mrn="M-1", day=1))
        (both,) = await ingest(container, lab("A-1", f.PATIENT_A, pid="a", mrn="M-1", day=2))
        assert both.outcome is Outcome.INDEXED
        a = await person_of(container, f.PATIENT_A)
        assert a is not None and await results_of(container, a) == 2


async def test_the_database_holds_the_rule_against_a_concurrent_worker(
    container: Container,
) -> None:
    """Two workers each checked against what was committed and linked a different number
    to one person: the partial unique index refuses the second link (ingest then tries the
    batch again and finds the conflict)."""
    await ingest(container, A_RESULT)
    a = await person_of(container, f.PATIENT_A)
    async with container.sessions() as s:
        system = (
            await s.execute(
                select(person_link.c.national_system).where(
                    person_link.c.person_id == a, person_link.c.scope == "national"
                )
            )
        ).scalar_one()
        assert system == f.NATIONAL
        failed = False
        try:
            async with s.begin_nested():
                await s.execute(
                    text(
                        "INSERT INTO person_link (pseudonym, person_id, scope, created_at, "
                        "national_system) VALUES ('x', :p, 'national', CURRENT_TIMESTAMP, :s)"
                    ),
                    {"p": a, "s": f.NATIONAL},
                )
        except Exception as exc:  # IntegrityError, wrapped by the driver
            failed = "uq_person_link_national" in str(exc) or "UNIQUE" in str(exc).upper()
        assert failed
