"""Tokens API: list and revoke API tokens (security-admin: all; a hospital admin: their
own hospital's users). Issuing is not offered here: API hosts hold no issuer key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from broker.api.deps import ContainerDep, TokensDep
from broker.domain.errors import Invalid
from broker.ports.access import TokenRecord
from broker.services import tokens as token_service

router = APIRouter(prefix="/api/v1/admin/tokens", tags=["admin"])


class RevokeIn(BaseModel):
    jti: str | None = Field(default=None, max_length=36, description="one token")
    subject: str | None = Field(default=None, max_length=200, description="or all of theirs")
    hospital: str | None = Field(default=None, max_length=32, description="with subject")
    reason: str = Field(min_length=1, max_length=200, description="recorded")

    @model_validator(mode="after")
    def _one_target(self) -> RevokeIn:
        if (self.jti is None) == (self.subject is None):
            raise ValueError("give either jti or subject")
        return self


class RevokedOut(BaseModel):
    revoked: list[str]


@router.get("", response_model=list[TokenRecord])
async def list_tokens(
    container: ContainerDep,
    actor: TokensDep,
    hospital: Annotated[str | None, Query(max_length=32)] = None,
    subject: Annotated[str | None, Query(max_length=200)] = None,
    live: bool = False,
) -> list[TokenRecord]:
    """Issued tokens, newest first (never the token text); `live`: not expired or revoked."""
    return await token_service.listed(
        container.access_uow(), actor, hospital=hospital, subject=subject, live_only=live
    )


@router.post("/revoke", response_model=RevokedOut)
async def revoke(body: RevokeIn, container: ContainerDep, actor: TokensDep) -> RevokedOut:
    """Revoke one token, or every live token of a subject: refused (401 "token revoked")
    from the next request on every API process, no restart."""
    try:
        revoked = await token_service.revoke(
            container.access_uow(),
            actor,
            reason=body.reason,
            jti=body.jti,
            subject=body.subject,
            hospital=body.hospital,
        )
    except ValueError as exc:
        raise Invalid("Invalid revocation", str(exc)) from None
    container.token_revocations().revoked(revoked)
    return RevokedOut(revoked=revoked)
