"""Reversible links between people, the review queue, and matching at ingest (issue #17).

A link only sets `person.merged_into` (reads follow it: `people.with_merged`); rows stay
under the person their own identifiers name, so an unlink (clearing the pointer) gives
each person back exactly their own results. `identity_link` keeps who linked whom, when,
and whether it still holds. Nothing demographic is read here except through the sealed
`person_demographics`, opened in memory to compare.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain import identity_review as review
from broker.domain import linking
from broker.domain.demographics import Demographics
from broker.ports.identity import DifferentNumbers, Link, Recognition, ReviewItem, SamePerson
from broker.ports.outcomes import Outcome
from broker.security.payload_cipher import ALGORITHM, PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import demographics
from broker.storage.identity_tables import identity_link, identity_review
from broker.storage.one_of import one_of
from broker.storage.people import with_merged
from broker.storage.tables import (
    person,
    person_block,
    person_demographics,
    person_link,
    recognition_check,
    recognition_outcome,
    result,
)

logger = logging.getLogger(__name__)

INGEST = "mrb-ingest"  # who an automatic link is recorded as made by
_CHUNK = 400  # ids per IN list: well under any bound-parameter limit


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


# -- people and their links -----------------------------------------------------------


async def roots(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    """Each existing person's surviving person (itself when not linked or merged)."""
    wanted = sorted(set(ids))
    found: dict[str, str] = {}
    for chunk in _chunks(wanted):
        rows = await session.execute(
            select(person.c.id, person.c.merged_into).where(one_of(person.c.id, chunk))
        )
        found.update({pid: merged or pid for pid, merged in rows})
    return found


async def group_numbers(
    session: AsyncSession, roots: Iterable[str]
) -> dict[str, dict[str, set[str]]]:
    """The national numbers (pseudonyms, by system) of each surviving person in `roots`
    with everyone linked into them: what broker.domain.linking weighs."""
    wanted = sorted(set(roots))
    held: dict[str, dict[str, set[str]]] = {root: {} for root in wanted}
    who, link = person.c, person_link.c
    for chunk in _chunks(wanted):
        rows = await session.execute(
            select(who.id, who.merged_into, link.national_system, link.pseudonym)
            .join(person, who.id == link.person_id)
            .where(
                one_of(who.id, chunk) | one_of(who.merged_into, chunk),
                link.national_system.is_not(None),
            )
        )
        for pid, merged, system, pseudonym in rows:
            root = merged if merged in held else pid
            held[root].setdefault(system, set()).add(pseudonym)
    return held


async def numbers_clash(session: AsyncSession, a: str, b: str) -> str | None:
    """The national system of which the groups of surviving people `a` and `b` hold
    different numbers, or None (linking.gained)."""
    held = await group_numbers(session, (a, b))
    return linking.gained([held[a], held[b]])


async def exists(session: AsyncSession, person_id: str) -> bool:
    return bool(await session.scalar(select(person.c.id).where(person.c.id == person_id)))


async def person_of(session: AsyncSession, pseudonym: str) -> str | None:
    """The person an identifier's pseudonym is linked to (their own, not the survivor)."""
    return await session.scalar(
        select(person_link.c.person_id).where(person_link.c.pseudonym == pseudonym)
    )


async def group(session: AsyncSession, person_id: str) -> set[str]:
    """The person and everyone linked or merged into them."""
    rows = await session.execute(with_merged(person_id))
    return {str(r[0]) for r in rows}


def _link_row(r: Any) -> Link:
    return Link(
        r.id, r.person_id, r.into_person_id, r.kind, r.review_id, r.created_at, r.created_by
    )


async def active_link(session: AsyncSession, person_id: str) -> Link | None:
    """The link that holds `person_id` in another person, if any."""
    row = (
        await session.execute(
            select(identity_link).where(
                identity_link.c.person_id == person_id, identity_link.c.ended_at.is_(None)
            )
        )
    ).first()
    return _link_row(row) if row else None


async def active_links_into(session: AsyncSession, person_id: str) -> list[Link]:
    rows = await session.execute(
        select(identity_link)
        .where(identity_link.c.into_person_id == person_id, identity_link.c.ended_at.is_(None))
        .order_by(identity_link.c.created_at)
    )
    return [_link_row(r) for r in rows]


async def link(
    session: AsyncSession,
    person_id: str,
    into_id: str,
    *,
    kind: review.LinkKind,
    by: str,
    now: datetime,
    review_id: str | None = None,
) -> Link:
    """Link `person_id`'s surviving person into `into_id`'s: only pointers change.

    Everyone already pointing at the linked person points at the new survivor (reads
    follow one step); their own links remember whom they were linked into, so an unlink
    can point them back."""
    found = await roots(session, (person_id, into_id))
    gone, survivor = found[person_id], found[into_id]
    if gone == survivor:
        raise SamePerson(f"{person_id} and {into_id} are one person already")
    if system := await numbers_clash(session, gone, survivor):
        raise DifferentNumbers(
            f"{person_id} and {into_id} hold different {system} numbers (with the people "
            "linked to each): they are two people"
        )
    row = Link(str(uuid.uuid4()), gone, survivor, kind.value, review_id, now, by)
    await session.execute(
        identity_link.insert().values(
            id=row.link_id,
            person_id=gone,
            into_person_id=survivor,
            kind=row.kind,
            review_id=review_id,
            created_at=now,
            created_by=by,
        )
    )
    await session.execute(
        update(person)
        .where(or_(person.c.id == gone, person.c.merged_into == gone))
        .values(merged_into=survivor)
    )
    return row


async def unlink(session: AsyncSession, row: Link, *, by: str, now: datetime) -> None:
    """Undo one link: the linked person stands alone again, with the people linked into
    them (not those linked into the other side)."""
    await session.execute(
        update(identity_link)
        .where(identity_link.c.id == row.link_id)
        .values(ended_at=now, ended_by=by, end_reason="unlinked")
    )
    await session.execute(
        update(person).where(person.c.id == row.person_id).values(merged_into=None)
    )
    back = [r.person_id for r in await active_links_into(session, row.person_id)]
    for chunk in _chunks(back):
        await session.execute(
            update(person).where(person.c.id.in_(chunk)).values(merged_into=row.person_id)
        )


async def end_merged(session: AsyncSession, merges: Mapping[str, str], now: datetime) -> None:
    """Identifiers proved people one (a deterministic merge moved the rows): the links
    between them, or holding a merged person elsewhere, cannot be undone any more."""
    gone = sorted(merges)
    for chunk in _chunks(gone):
        await session.execute(
            update(identity_link)
            .where(
                identity_link.c.ended_at.is_(None),
                or_(
                    identity_link.c.person_id.in_(chunk),
                    identity_link.c.into_person_id.in_(chunk)
                    & identity_link.c.person_id.in_(sorted(set(merges.values()))),
                ),
            )
            .values(ended_at=now, ended_by=INGEST, end_reason="merged")
        )


# -- the review queue -------------------------------------------------------------------


def _review_row(r: Any) -> ReviewItem:
    return ReviewItem(
        r.id,
        r.person_id,
        r.candidate_id,
        r.hospital_id,
        r.decision,
        r.total,
        list(r.fields),
        r.identifier,
        list(r.hard_rules),
        r.rules_version,
        r.status,
        r.created_at,
        r.decided_at,
        r.decided_by,
    )


async def reviews(
    session: AsyncSession, status: review.ReviewStatus | None, limit: int
) -> list[ReviewItem]:
    query = select(identity_review).order_by(identity_review.c.created_at, identity_review.c.id)
    if status is not None:
        query = query.where(identity_review.c.status == status.value)
    return [_review_row(r) for r in await session.execute(query.limit(limit))]


async def review_item(session: AsyncSession, review_id: str) -> ReviewItem | None:
    row = (
        await session.execute(select(identity_review).where(identity_review.c.id == review_id))
    ).first()
    return _review_row(row) if row else None


async def decide(
    session: AsyncSession, review_id: str, status: review.ReviewStatus, by: str, now: datetime
) -> bool:
    """Close an open item; False when it was not open (decided concurrently)."""
    done = await session.execute(
        update(identity_review)
        .where(
            identity_review.c.id == review_id,
            identity_review.c.status == review.ReviewStatus.OPEN.value,
        )
        .values(status=status.value, decided_at=now, decided_by=by)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


# -- matching at ingest -----------------------------------------------------------------


async def match_at_ingest(
    session: AsyncSession,
    cipher: PayloadCipher,
    pseudonyms: Pseudonymiser,
    records: Mapping[tuple[str, str], Demographics],
    now: datetime,
) -> None:
    """Score each (person, hospital) record against the people its blocks hold.

    Called by ingest after the batch's demographics and blocks are written, for records
    without a trusted national identifier only. Reads are bounded: blocks larger than the
    rules' max_block_size are skipped, and only blocked candidates are opened."""
    if not records:
        return
    from broker.domain import matching  # pypinyin's dictionaries load only when needed
    from broker.reference.matching_rules import shipped_matching_rules

    rules = shipped_matching_rules()
    prepared = {k: matching.prepare(d, rules) for k, d in records.items()}
    blocks = {
        k: {
            pseudonyms.of_text(demographics.BLOCK_DOMAIN, key)
            for key in matching.blocking_keys(p, rules.blocking)
        }
        for k, p in prepared.items()
    }
    wanted = sorted(set().union(*blocks.values()))
    if not wanted:
        return
    usable: set[str] = set()
    for chunk in _chunks(wanted):
        sizes = await session.execute(
            select(person_block.c.pseudonym, func.count())
            .where(one_of(person_block.c.pseudonym, chunk))
            .group_by(person_block.c.pseudonym)
        )
        usable.update(p for p, n in sizes if n <= rules.max_block_size)
    members: dict[str, set[tuple[str, str]]] = {}
    for chunk in _chunks(sorted(usable)):
        rows = await session.execute(
            select(
                person_block.c.pseudonym, person_block.c.person_id, person_block.c.hospital_id
            ).where(one_of(person_block.c.pseudonym, chunk))
        )
        for pseudo, pid, hospital in rows:
            members.setdefault(pseudo, set()).add((pid, hospital))
    blocked = {
        k: set().union(*(members.get(b, set()) for b in bs)) - {k} for k, bs in blocks.items()
    }
    everyone = {pid for pairs in blocked.values() for pid, _ in pairs} | {p for p, _ in records}
    survivors = await roots(session, everyone)
    opened = await _open_demographics(
        session, cipher, {pair for pairs in blocked.values() for pair in pairs}
    )
    reviewed = await _reviewed_pairs(session, everyone)
    for (pid, hospital), mine in prepared.items():
        me = survivors.get(pid, pid)
        scored = [
            (survivors[cand], matching.compare(mine, matching.prepare(opened[pair], rules), rules))
            for pair in blocked[(pid, hospital)]
            for cand in (pair[0],)
            if pair in opened and survivors.get(cand, cand) != me
        ]
        best = review.best_per_person(scored)
        best = {c: r for c, r in best.items() if frozenset((pid, c)) not in reviewed}
        decided = review.plan(best)
        if decided.link is not None and (
            me != pid
            or await active_links_into(session, pid)
            or await numbers_clash(session, pid, survivors.get(decided.link, decided.link))
        ):
            # Linked elsewhere already, or others linked into them (a person seen before,
            # whose first demographics arrived later): joining two groups is a person's
            # decision; and never automatic between holders of two resident IDs.
            decided = review.Plan(None, ((decided.link, best[decided.link]), *decided.review))
        if decided.link is not None:
            result = best[decided.link]
            review_id = await _add_review(
                session, pid, decided.link, hospital, result, rules.version, now, linked=True
            )
            await link(
                session,
                pid,
                decided.link,
                kind=review.LinkKind.AUTOMATIC,
                by=INGEST,
                now=now,
                review_id=review_id,
            )
            reviewed.add(frozenset((pid, decided.link)))
        for cand, result in decided.review:
            await _add_review(session, pid, cand, hospital, result, rules.version, now)
            reviewed.add(frozenset((pid, cand)))


async def without_demographics(
    session: AsyncSession, records: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (person, hospital) records with no demographics stored yet: a person first seen
    without them is matched when a hospital first sends them (read before they are
    written; one primary-key lookup per record)."""
    wanted = sorted(set(records))
    if not wanted:
        return set()
    stored: set[tuple[str, str]] = set()
    for i in range(0, len(wanted), _CHUNK):
        rows = await session.execute(
            select(person_demographics.c.person_id, person_demographics.c.hospital_id).where(
                tuple_(person_demographics.c.person_id, person_demographics.c.hospital_id).in_(
                    wanted[i : i + _CHUNK]
                )
            )
        )
        stored.update((pid, hospital) for pid, hospital in rows)
    return set(wanted) - stored


async def _open_demographics(
    session: AsyncSession, cipher: PayloadCipher, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], Demographics]:
    found: dict[tuple[str, str], Demographics] = {}
    ids = sorted({p for p, _ in pairs})
    for chunk in _chunks(ids):
        rows = await session.execute(
            select(person_demographics).where(person_demographics.c.person_id.in_(chunk))
        )
        for r in rows:
            if (r.person_id, r.hospital_id) in pairs:
                sealed = Sealed(r.key_id, r.algorithm, r.nonce, r.ciphertext)
                found[(r.person_id, r.hospital_id)] = demographics.open_sealed(
                    cipher, r.person_id, r.hospital_id, sealed
                )
    return found


async def _reviewed_pairs(session: AsyncSession, ids: set[str]) -> set[frozenset[str]]:
    """Pairs already in the queue (any status): a rejected pair is never asked again."""
    found: set[frozenset[str]] = set()
    for chunk in _chunks(sorted(ids)):
        rows = await session.execute(
            select(identity_review.c.person_id, identity_review.c.candidate_id).where(
                or_(
                    identity_review.c.person_id.in_(chunk),
                    identity_review.c.candidate_id.in_(chunk),
                )
            )
        )
        found.update(frozenset(r) for r in rows)
    return found


async def _add_review(
    session: AsyncSession,
    person_id: str,
    candidate_id: str,
    hospital: str,
    result: Any,
    rules_version: str,
    now: datetime,
    *,
    linked: bool = False,
) -> str:
    explained = review.explanation(result)
    review_id = str(uuid.uuid4())
    await session.execute(
        identity_review.insert().values(
            id=review_id,
            person_id=person_id,
            candidate_id=candidate_id,
            hospital_id=hospital,
            decision=explained["decision"],
            total=explained["total"],
            fields=explained["fields"],
            identifier=explained["identifier"],
            hard_rules=explained["hard_rules"],
            rules_version=rules_version[:64],
            status=(review.ReviewStatus.LINKED if linked else review.ReviewStatus.OPEN).value,
            created_at=now,
            decided_at=now if linked else None,
            decided_by=INGEST if linked else None,
        )
    )
    # Person ids only: no demographic reaches the log.
    logger.info(
        "identity review %s: %s for person %s and %s",
        review_id,
        explained["decision"],
        person_id,
        candidate_id,
    )
    return review_id


# -- what an unlink undoes --------------------------------------------------------------


async def recognitions_within(
    session: AsyncSession, cipher: PayloadCipher, people: set[str], since: datetime
) -> list[Recognition]:
    """Accepted outcomes since `since` whose check's person and candidate result's person
    are both in `people`, with the identifier the doctor asked with (opened in memory)."""
    if not people:
        return []
    ids = sorted(people)
    rows = await session.execute(
        select(
            recognition_outcome,
            recognition_check.c.ordering_hospital,
            recognition_check.c.patient_sealed,
            recognition_check.c.patient_nonce,
            recognition_check.c.patient_key_id,
            result.c.person_id.label("result_person"),
            result.c.hospital_id.label("result_hospital"),
        )
        .join(recognition_check, recognition_check.c.id == recognition_outcome.c.check_id)
        .join(result, result.c.id == recognition_outcome.c.result_id)
        .where(
            recognition_outcome.c.outcome == "accepted",
            recognition_check.c.created_at >= since,
            recognition_check.c.person_id.in_(ids),
            result.c.person_id.in_(ids),
        )
        .order_by(recognition_outcome.c.id)
    )
    found = []
    for r in rows:
        system = value = None
        if r.patient_sealed is not None:
            sealed = Sealed(r.patient_key_id, ALGORITHM, r.patient_nonce, r.patient_sealed)
            asked = json.loads(cipher.open(sealed, associated=r.check_id.encode()))
            system, value = asked.get("system"), asked.get("value")
        outcome = Outcome(**{k: getattr(r, k) for k in Outcome.__dataclass_fields__})
        found.append(
            Recognition(
                outcome, r.ordering_hospital, system, value, r.result_person, r.result_hospital
            )
        )
    return found
