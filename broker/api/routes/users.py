"""Users API: the people who sign in, as `mrb user` manages them (broker/services/users.py).

Local accounts (username + argon2id password, for the web pages) and people of the
OpenID Connect issuer mapped to a role and hospital. Adding an account or mapping a
person grants access, as issuing a token does: security-admin only (Duty.ISSUING).
Listing, disabling and resetting a password follow tokens (Duty.TOKENS): a
security-admin for everyone, a hospital `admin` for their own hospital's people. The
service checks the hospital again and audits every change with its actor
(`user.add|reset|disable|map`). A password goes in only, never out: it is a SecretStr
(masked in any repr), checked by the service (which never echoes it), and no answer or
problem body holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from broker.api.deps import ContainerDep, TokensDep, require
from broker.domain.actors import Actor, Duty, Role
from broker.domain.errors import Invalid, Refused
from broker.domain.sessions import MAX_PASSWORD_LENGTH
from broker.ports.access import OidcUser
from broker.ports.web import WebAccount
from broker.security.oidc import MAX_SUBJECT
from broker.services import users as user_service

router = APIRouter(prefix="/api/v1/admin/users", tags=["admin"])
IssuingDep = Annotated[Actor, Depends(require(Duty.ISSUING))]
Username = Annotated[
    str,
    Path(
        min_length=2,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$",
        description="a local account's username",
    ),
]
_ROLE_HELP = "a role people may hold (not adapter: a machine's)"
_HOSPITAL_HELP = "the hospital a hospital role acts for; none for a platform role"
_ISSUER_HELP = "the issuer exactly as its tokens' `iss`; default MRB_OIDC_ISSUER"


class AccountOut(BaseModel):
    """A local account: never its password or hash."""

    username: str
    display_name: str | None
    role: str
    hospital: str = Field(description="'*' for a platform role")
    enabled: bool
    created_by: str
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None
    failed_logins: int = Field(description="failed sign-ins counted in the current window")
    locked_until: datetime | None = Field(description="the end of a lock after failures")


class MappedOut(BaseModel):
    """A person of the OpenID Connect issuer and the role mrb gives them."""

    issuer: str
    subject: str
    display_name: str | None
    role: str
    hospital: str = Field(description="'*' for a platform role")
    enabled: bool
    created_by: str
    created_at: datetime
    disabled_at: datetime | None


class PeopleOut(BaseModel):
    accounts: list[AccountOut] = Field(description="local accounts, by username")
    mapped: list[MappedOut] = Field(description="people of the issuer, by issuer and subject")


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        min_length=2, max_length=64, description="2-64 of a-z 0-9 . _ @ - (stored lower-case)"
    )
    password: SecretStr = Field(
        min_length=1,
        max_length=MAX_PASSWORD_LENGTH,
        description="the initial password, set by the administrator (at least 12 characters)",
    )
    role: Role = Field(description=_ROLE_HELP)
    hospital: str | None = Field(default=None, max_length=32, description=_HOSPITAL_HELP)
    display_name: str | None = Field(default=None, max_length=200)


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    enable: bool = Field(default=False, description="also enable the account if disabled")


class DisableIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200, description="recorded")


class MappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str | None = Field(default=None, max_length=300, description=_ISSUER_HELP)
    subject: str = Field(
        min_length=1, max_length=MAX_SUBJECT, description="the issuer's `sub` claim exactly"
    )
    role: Role = Field(description=_ROLE_HELP)
    hospital: str | None = Field(default=None, max_length=32, description=_HOSPITAL_HELP)
    display_name: str | None = Field(default=None, max_length=200)


class MappedDisableIn(DisableIn):
    issuer: str | None = Field(default=None, max_length=300, description=_ISSUER_HELP)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT)


class DisabledOut(BaseModel):
    changed: bool = Field(description="false when the person was disabled already")


@router.get("", response_model=PeopleOut)
async def list_people(
    container: ContainerDep,
    actor: TokensDep,
    hospital: Annotated[
        str | None, Query(max_length=32, description="only this hospital ('*': platform roles)")
    ] = None,
    issuer: Annotated[
        str | None, Query(max_length=300, description="only this issuer's people (no accounts)")
    ] = None,
    enabled: Annotated[bool, Query(description="leave out disabled people")] = False,
) -> PeopleOut:
    """Local accounts and the issuer's mapped people a security-admin sees (everyone), or
    a hospital admin (their own hospital's)."""
    mapped = await user_service.listed(
        container.access_uow(), actor, issuer=issuer, hospital=hospital, enabled_only=enabled
    )
    accounts = (
        []
        if issuer is not None
        else await user_service.listed_accounts(container.web_uow(), actor, hospital=hospital)
    )
    return PeopleOut(
        accounts=[_account(a) for a in accounts if not (enabled and a.disabled_at)],
        mapped=[_mapped(u) for u in mapped],
    )


@router.post("/accounts", status_code=status.HTTP_201_CREATED, response_model=AccountOut)
async def add_account(body: AccountIn, container: ContainerDep, actor: IssuingDep) -> AccountOut:
    """Add a local account with the password the administrator chose (security-admin;
    409 if the username exists). Audited as `user.add`, without the password."""
    with _invalid("Invalid account"):
        account = await user_service.add_account(
            container.web_uow(),
            actor,
            username=body.username,
            password=body.password.get_secret_value(),
            role=body.role,
            hospital=body.hospital,
            display_name=body.display_name,
        )
    return _account(account)


@router.post("/accounts/{username}/password", response_model=AccountOut)
async def reset_password(
    username: Username, body: PasswordIn, container: ContainerDep, actor: TokensDep
) -> AccountOut:
    """Set a new password: clears failed sign-ins and the lock, ends the account's
    sessions, and with `enable` enables a disabled account. Audited as `user.reset`."""
    with _invalid("Invalid password"):
        account = await user_service.reset_password(
            container.web_uow(),
            actor,
            username=username,
            password=body.password.get_secret_value(),
            enable=body.enable,
        )
    return _account(account)


@router.post("/accounts/{username}/disable", response_model=DisabledOut)
async def disable_account(
    username: Username, body: DisableIn, container: ContainerDep, actor: TokensDep
) -> DisabledOut:
    """Disable a local account: its sessions end at once (a new password with `enable`
    enables it again). Audited as `user.disable`, with the reason."""
    with _invalid("Invalid request"):
        changed = await user_service.disable_account(
            container.web_uow(), actor, username=username, reason=body.reason
        )
    return DisabledOut(changed=changed)


@router.post("/oidc", status_code=status.HTTP_201_CREATED, response_model=MappedOut)
async def map_person(body: MappingIn, container: ContainerDep, actor: IssuingDep) -> MappedOut:
    """Map a person of the issuer to a role and hospital (security-admin); mapping again
    replaces the role and enables a disabled person. Audited as `user.map`."""
    with _invalid("Invalid mapping"):
        user = await user_service.map_user(
            container.access_uow(),
            actor,
            issuer=_issuer(container.settings.oidc_issuer, body.issuer),
            subject=body.subject,
            role=body.role,
            hospital=body.hospital,
            display_name=body.display_name,
        )
    return _mapped(user)


@router.post("/oidc/disable", response_model=DisabledOut)
async def disable_person(
    body: MappedDisableIn, container: ContainerDep, actor: TokensDep
) -> DisabledOut:
    """Disable a person of the issuer: refused from their next request, in every API
    process (mapping again enables them). Audited as `user.disable`, with the reason."""
    with _invalid("Invalid request"):
        changed = await user_service.disable(
            container.access_uow(),
            actor,
            issuer=_issuer(container.settings.oidc_issuer, body.issuer),
            subject=body.subject,
            reason=body.reason,
        )
    return DisabledOut(changed=changed)


@contextmanager
def _invalid(title: str) -> Iterator[None]:
    """A ValueError of the service (what is wrong with the request, never a password) as
    a 422 problem; its refusals (404, 409) as they are."""
    try:
        yield
    except Refused:
        raise
    except ValueError as exc:
        raise Invalid(title, str(exc)) from None


def _issuer(configured: str | None, given: str | None) -> str:
    issuer = given or configured
    if not issuer:
        raise Invalid("No issuer", "give the issuer: no MRB_OIDC_ISSUER is configured")
    return issuer


def _account(a: WebAccount) -> AccountOut:
    return AccountOut(
        username=a.username,
        display_name=a.display_name,
        role=a.role,
        hospital=a.hospital,
        enabled=a.disabled_at is None,
        created_by=a.created_by,
        created_at=a.created_at,
        password_changed_at=a.password_changed_at,
        disabled_at=a.disabled_at,
        failed_logins=a.failed_count,
        locked_until=a.locked_until,
    )


def _mapped(u: OidcUser) -> MappedOut:
    return MappedOut(
        issuer=u.issuer,
        subject=u.subject,
        display_name=u.display_name,
        role=u.role,
        hospital=u.hospital,
        enabled=u.disabled_at is None,
        created_by=u.created_by,
        created_at=u.created_at,
        disabled_at=u.disabled_at,
    )
