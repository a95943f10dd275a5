"""Patient identity across hospitals: the review queue, link and unlink (issue #17).

Only the platform admin decides (`Duty.IDENTITY`): links span hospitals. A link only
points one person at another (reads follow it), so it is undone exactly: after an unlink
neither person's results are found for the other, and every recognition made through the
link is undone like a withdrawal of its result: the doctor gets a `link-undone` notice
and the saving is reversed, by the safety notifier that handles withdrawn results. Every
decision is audited in the transaction that makes it.

How an operator names a person: by person id (the review list shows them; person ids are
random, not patient data), or by an identifier SYSTEM|VALUE looked up as a check would
(a hospital's MRN needs its hospital).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.domain.actors import Actor, Duty
from broker.domain.errors import Conflict, Invalid, NotFound
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier
from broker.domain.identity_review import LinkKind, PersonRef, ReviewStatus, Verdict
from broker.domain.results import ResultChange
from broker.ports.identity import (
    DifferentNumbers,
    IdentityUnitOfWork,
    Link,
    Recognition,
    ReviewItem,
    SamePerson,
)
from broker.services.safety import SafetyNotifier

# The `new_status` of a `link-undone` notice (and of its `reversed` event): the result's
# own status did not change, the link it was found through was undone (safety.py reverses
# the saving and notifies the doctor).
UNLINKED_STATUS = "unlinked"
MAX_LIST = 500


@dataclass(frozen=True)
class Unlinked:
    link_id: str
    person_id: str
    from_person_id: str
    recognitions_undone: int


async def list_reviews(
    uow: IdentityUnitOfWork,
    actor: Actor,
    *,
    status: ReviewStatus | None = ReviewStatus.OPEN,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The review items (open ones by default), oldest first; the read is audited."""
    actor.authorize(Duty.IDENTITY)
    if not 1 <= limit <= MAX_LIST:
        raise Invalid("Invalid limit", f"limit must be between 1 and {MAX_LIST}")
    async with uow:
        items = await uow.identity.reviews(status, limit)
        await uow.audit.record_read(
            actor,
            action="identity-review-list",
            purpose="administration",
            patient=None,
            person_id=None,
            detail={"status": status.value if status else None, "items": len(items)},
        )
        await uow.commit()
    return [as_dict(i) for i in items]


async def decide(
    uow: IdentityUnitOfWork,
    actor: Actor,
    review_id: str,
    verdict: Verdict,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Confirm (link the record's person into the candidate) or reject an open item."""
    actor.authorize(Duty.IDENTITY)
    now = now or datetime.now(UTC)
    async with uow:
        item = await uow.identity.review(review_id)
        if item is None:
            raise NotFound("Unknown review item", f"there is no review item {review_id!r}")
        if item.status != ReviewStatus.OPEN:
            raise Conflict(
                "Review item already decided",
                f"review item {review_id} is {item.status}; to undo a link use unlink",
            )
        status = ReviewStatus.CONFIRMED if verdict is Verdict.CONFIRM else ReviewStatus.REJECTED
        link: Link | None = None
        if verdict is Verdict.CONFIRM:
            link = await _link(uow, item.person_id, item.candidate_id, actor, now, review_id)
        if not await uow.identity.decide(review_id, status, actor.name, now):
            raise Conflict("Review item already decided", f"{review_id} was decided meanwhile")
        await uow.changes.record(
            actor,
            action=f"identity.review.{verdict.value}",
            hospital=None,
            detail={
                "review_id": review_id,
                "person_id": item.person_id,
                "candidate_id": item.candidate_id,
                "link_id": link.link_id if link else None,
            },
        )
        await uow.commit()
    return {"review_id": review_id, "status": status.value, "link_id": link and link.link_id}


async def link_people(
    uow: IdentityUnitOfWork,
    registry: IdentifierRegistry,
    actor: Actor,
    into: PersonRef,
    person: PersonRef,
    *,
    now: datetime | None = None,
) -> Link:
    """Link `person` into `into` (reads of either find both; undone by unlink)."""
    actor.authorize(Duty.IDENTITY)
    now = now or datetime.now(UTC)
    async with uow:
        survivor = await _resolve(uow, registry, into)
        linked = await _resolve(uow, registry, person)
        link = await _link(uow, linked, survivor, actor, now, None)
        await uow.changes.record(
            actor,
            action="identity.link",
            hospital=None,
            detail={
                "link_id": link.link_id,
                "person_id": link.person_id,
                "into_person_id": link.into_person_id,
            },
        )
        await uow.commit()
    return link


async def unlink_person(
    uow: IdentityUnitOfWork,
    registry: IdentifierRegistry,
    notifier: SafetyNotifier,
    actor: Actor,
    ref: PersonRef,
    *,
    now: datetime | None = None,
) -> Unlinked:
    """Undo the link holding `ref` in another person (or, when `ref` is the survivor of
    exactly one link, that link), and every recognition made through it."""
    actor.authorize(Duty.IDENTITY)
    now = now or datetime.now(UTC)
    async with uow:
        pid = await _resolve(uow, registry, ref)
        link = await uow.identity.active_link(pid)
        if link is None:
            into = await uow.identity.links_into(pid)
            if len(into) != 1:
                raise (
                    NotFound("Not linked", f"person {pid} is not linked to anyone")
                    if not into
                    else Conflict(
                        "Several links",
                        f"{len(into)} people are linked into {pid}: unlink one of them: "
                        + ", ".join(x.person_id for x in into),
                    )
                )
            link = into[0]
        people = await uow.identity.group(link.into_person_id)
        crossed = await uow.identity.recognitions_within(people, link.created_at)
        await uow.identity.unlink(link, by=actor.name, now=now)
        undone = await _undo_recognitions(uow, registry, notifier, crossed, link, now)
        await uow.changes.record(
            actor,
            action="identity.unlink",
            hospital=None,
            detail={
                "link_id": link.link_id,
                "person_id": link.person_id,
                "from_person_id": link.into_person_id,
                "kind": link.kind,
                "recognitions_undone": undone,
            },
        )
        await uow.commit()
    return Unlinked(link.link_id, link.person_id, link.into_person_id, undone)


async def _undo_recognitions(
    uow: IdentityUnitOfWork,
    registry: IdentifierRegistry,
    notifier: SafetyNotifier,
    crossed: list[Recognition],
    link: Link,
    now: datetime,
) -> int:
    """Each recognition whose asked-for person and result's person are apart now."""
    if not crossed:
        return 0
    roots = await uow.identity.roots({c.result_person for c in crossed})
    undone = 0
    for c in crossed:
        asked = await _asked_person(uow, registry, c)
        asked_root = (await uow.identity.roots([asked])).get(asked, asked) if asked else None
        if asked_root is not None and asked_root == roots.get(c.result_person):
            continue  # the patient's own result: the link did not make it
        assert c.outcome.result_id is not None  # accepted outcomes name their result
        change = ResultChange(
            c.outcome.result_id, c.result_hospital, UNLINKED_STATUS, f"unlink:{link.link_id}"
        )
        await notifier.undo(uow.safety, c.outcome, change, now)
        undone += 1
    return undone


async def _asked_person(
    uow: IdentityUnitOfWork,
    registry: IdentifierRegistry,
    c: Recognition,
) -> str | None:
    """The person the doctor's identifier names now; None (undo, to be safe) if unknown."""
    if not c.asked_value:
        return None
    try:
        ident = registry.lookup(c.asked_system, c.asked_value, hospital=c.ordering_hospital)
    except InvalidIdentifier:
        return None
    return await uow.identity.person_of(ident) if ident else None


async def _link(
    uow: IdentityUnitOfWork,
    person: str,
    into: str,
    actor: Actor,
    now: datetime,
    review_id: str | None,
) -> Link:
    try:
        return await uow.identity.link(
            person, into, kind=LinkKind.MANUAL, by=actor.name, now=now, review_id=review_id
        )
    except SamePerson as exc:
        raise Conflict("Already one person", str(exc)) from None
    except DifferentNumbers as exc:
        raise Conflict("Different people", str(exc)) from None


async def _resolve(uow: IdentityUnitOfWork, registry: IdentifierRegistry, ref: PersonRef) -> str:
    if ref.person_id is not None:
        if not await uow.identity.exists(ref.person_id):
            raise NotFound("Unknown person", f"there is no person {ref.person_id!r}")
        return ref.person_id
    try:
        ident = registry.lookup(ref.system, ref.value, hospital=ref.hospital or "")
    except InvalidIdentifier as exc:
        raise Invalid("Invalid patient identifier", str(exc)) from None
    found = await uow.identity.person_of(ident) if ident else None
    if found is None:
        raise NotFound(
            "Unknown patient",
            f"no person is linked to {ref}"
            + ("" if ref.hospital else "; a hospital's identifier (an MRN) needs its hospital"),
        )
    return found


def as_dict(item: ReviewItem) -> dict[str, Any]:
    return {
        "review_id": item.review_id,
        "person_id": item.person_id,
        "candidate_id": item.candidate_id,
        "hospital": item.hospital_id,
        "decision": item.decision,
        "total": item.total,
        "fields": item.fields,
        "identifier": item.identifier,
        "hard_rules": item.hard_rules,
        "rules_version": item.rules_version,
        "status": item.status,
        "created_at": item.created_at.isoformat(),
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
        "decided_by": item.decided_by,
    }
