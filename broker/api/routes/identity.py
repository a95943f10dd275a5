"""Admin API for patient identity across hospitals (issue #17): the review queue, link and
unlink. Platform-admin only (links span hospitals); every decision is audited with its
actor, and refusals are RFC 7807 problem bodies (broker/api/problems.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from broker.api.deps import ContainerDep, require
from broker.domain.actors import Actor, Duty
from broker.domain.errors import Invalid
from broker.domain.identity_review import PersonRef, ReviewStatus, Verdict
from broker.services import identity_review as service

router = APIRouter(prefix="/api/v1/admin/identity", tags=["admin"])
IdentityDep = Annotated[Actor, Depends(require(Duty.IDENTITY))]


class PersonIn(BaseModel):
    """A person by id (as the review list shows it), or by one of their identifiers."""

    person_id: str | None = Field(default=None, max_length=36)
    system: str | None = Field(default=None, max_length=300)
    value: str | None = Field(default=None, max_length=100)
    hospital: str | None = Field(
        default=None, max_length=32, description="the issuer of a hospital identifier (MRN)"
    )

    def ref(self, where: str) -> PersonRef:
        if self.person_id and not (self.system or self.value):
            return PersonRef(person_id=self.person_id)
        if self.system and self.value and not self.person_id:
            return PersonRef(system=self.system, value=self.value, hospital=self.hospital)
        raise Invalid("Invalid person", f"{where}: give person_id, or system and value (not both)")


class LinkIn(BaseModel):
    into: PersonIn = Field(description="the person kept")
    person: PersonIn = Field(description="the person linked into it")


class UnlinkIn(BaseModel):
    person: PersonIn


class DecisionIn(BaseModel):
    decision: Literal["confirm", "reject"]


@router.get("/reviews")
async def list_reviews(
    container: ContainerDep,
    actor: IdentityDep,
    status_: Annotated[
        Literal["open", "linked", "confirmed", "rejected", "all"], Query(alias="status")
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIST)] = 100,
) -> list[dict[str, Any]]:
    """Review items, oldest first: person ids, per-field levels and weights, rules version
    (never demographics)."""
    wanted = None if status_ == "all" else ReviewStatus(status_)
    return await service.list_reviews(container.identity_uow(), actor, status=wanted, limit=limit)


@router.post("/reviews/{review_id}/decision")
async def decide(
    review_id: str, body: DecisionIn, container: ContainerDep, actor: IdentityDep
) -> dict[str, Any]:
    """Confirm (link the pair) or reject an open review item; 409 when already decided."""
    return await service.decide(container.identity_uow(), actor, review_id, Verdict(body.decision))


@router.post("/links", status_code=status.HTTP_201_CREATED)
async def link(body: LinkIn, container: ContainerDep, actor: IdentityDep) -> dict[str, str]:
    """Link `person` into `into` (reversible with unlink); 409 when they are one already."""
    made = await service.link_people(
        container.identity_uow(),
        container.identifiers(),
        actor,
        body.into.ref("into"),
        body.person.ref("person"),
    )
    return {
        "link_id": made.link_id,
        "person_id": made.person_id,
        "into_person_id": made.into_person_id,
    }


@router.post("/unlink")
async def unlink(body: UnlinkIn, container: ContainerDep, actor: IdentityDep) -> dict[str, Any]:
    """Undo a person's link; recognitions made through it are treated as withdrawn
    results (the doctor notified, the saving reversed)."""
    done = await service.unlink_person(
        container.identity_uow(),
        container.identifiers(),
        container.safety_notifier(),
        actor,
        body.person.ref("person"),
    )
    return {
        "link_id": done.link_id,
        "person_id": done.person_id,
        "from_person_id": done.from_person_id,
        "recognitions_undone": done.recognitions_undone,
    }
