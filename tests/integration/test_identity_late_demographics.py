"""A person first seen without demographics is matched when their hospital first sends
them (issue #17), on SQLite and PostgreSQL; a later change is not scored again, and a
person others are linked into is never linked automatically."""

from __future__ import annotations

from typing import Any

from broker.bootstrap import Container
from broker.domain.identity_review import PersonRef
from broker.services import identity_review as svc
from broker.storage.identity_tables import identity_link, identity_review
from tests import factories as f
from tests.conftest import certify
from tests.integration.test_identity_review import ADMIN, MRN, index, patient, rows


def bare(mrn: str) -> dict[str, Any]:
    """H002's Patient known by its MRN only: nothing to match on."""
    return {k: v for k, v in patient(mrn).items() if k in ("resourceType", "id", "identifier")}


async def test_first_demographics_of_a_known_person_are_matched(container: Container) -> None:
    c = container
    await certify(c)
    await index(c, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(c, f.lab_bundle(accession="ACC-77", pat=bare("MRN-77")), "H002")
    assert await rows(c, identity_review) == []  # nothing to compare yet

    # H002's next message names 张晓鸣 (same pinyin as H001's 张晓明): a possible match.
    await index(c, f.lab_bundle(accession="ACC-78", pat=patient("MRN-77", "晓鸣")), "H002")
    (item,) = await rows(c, identity_review)
    assert (item.decision, item.status, item.hospital_id) == ("POSSIBLE_MATCH", "open", "H002")

    # Sent again, or changed: not scored again (the pair is queued once).
    await index(c, f.lab_bundle(accession="ACC-79", pat=patient("MRN-77", "晓鸣")), "H002")
    await index(c, f.lab_bundle(accession="ACC-80", pat=patient("MRN-77", "晓明")), "H002")
    assert len(await rows(c, identity_review)) == 1 and await rows(c, identity_link) == []


async def test_an_exact_late_match_links_automatically_and_reversibly(
    container: Container,
) -> None:
    c = container
    await certify(c)
    await index(c, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(c, f.lab_bundle(accession="ACC-77", pat=bare("MRN-77")), "H002")
    await index(c, f.lab_bundle(accession="ACC-78", pat=patient("MRN-77")), "H002")
    (item,) = await rows(c, identity_review)
    assert (item.decision, item.status) == ("MATCH", "linked")
    (link,) = await rows(c, identity_link)
    assert link.kind == "automatic" and link.person_id == item.person_id
    undone = await svc.unlink_person(
        c.identity_uow(), c.identifiers(), c.safety_notifier(), ADMIN, PersonRef(link.person_id)
    )
    assert undone.link_id == link.id


async def test_a_person_others_are_linked_into_is_only_reviewed(container: Container) -> None:
    """H002's bare MRN-77 already holds H003's record (a manual link); when H002 first
    sends demographics matching H001's exactly, joining the two groups waits for review."""
    c = container
    await certify(c)
    await index(c, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(c, f.lab_bundle(accession="ACC-77", pat=bare("MRN-77")), "H002")
    await index(c, f.lab_bundle(accession="ACC-5", pat=bare("MRN-5")), "H001")
    await svc.link_people(
        c.identity_uow(),
        c.identifiers(),
        ADMIN,
        PersonRef(system=MRN, value="MRN-77", hospital="H002"),
        PersonRef(system=MRN, value="MRN-5", hospital="H001"),
    )
    await index(c, f.lab_bundle(accession="ACC-78", pat=patient("MRN-77")), "H002")
    (item,) = await rows(c, identity_review)
    assert (item.decision, item.status) == ("MATCH", "open")
    (manual,) = await rows(c, identity_link)
    assert manual.kind == "manual"
