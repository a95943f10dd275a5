"""People who log in through OpenID Connect: mapping them to a role and hospital, listing
and disabling them, and turning a verified OIDC identity into an Actor on each request;
and local accounts (username + argon2id password) for the web pages: adding, disabling,
resetting and listing them (their logins: broker/services/web_login.py).

The issuer says who someone is; only mrb says what they may do. Mapping (`user.map`) is
granting access, as issuing a token is: the security administrator's duty (ISSUING).
Listing and disabling follow tokens (TOKENS): a security administrator for everyone, a
hospital admin for their own hospital's people. Every change is audited with its actor.
The mapping is read on every request, so disabling someone takes effect on their next
request, in every API process, without a restart.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from broker.domain.actors import ALL_HOSPITALS, Actor, Duty, Role
from broker.domain.errors import Conflict, NotAllowed, NotFound, Unavailable
from broker.domain.sessions import check_password, check_username, normalize_username
from broker.ports.access import AccessLookups, AccessUnitOfWork, OidcUser, RegisterUnavailable
from broker.ports.registry import HospitalRegistry
from broker.ports.web import WebAccount, WebUnitOfWork
from broker.security.oidc import MAX_SUBJECT, OidcIdentity, issuer_url
from broker.security.passwords import hash_password
from broker.security.tokens import actor_hospital
from broker.services.web_login import OIDC_ACCOUNT_PREFIX

_MAX_NAME = 200


class AccountExists(Conflict, ValueError):
    """A local account of that username exists (a refusal, and a ValueError for callers
    that report bad requests alike)."""


def _person(
    name: str, role: Role, hospital: str | None, display_name: str | None
) -> tuple[str, str | None]:
    """The checks of granting a person a role, shared by mapping an issuer's person and
    adding a local account: the hospital the role acts for ('*' for a platform role) and
    the trimmed display name (None when blank); ValueError names what does not fit."""
    if role is Role.ADAPTER:
        raise ValueError("adapter is a machine's role: people who log in cannot hold it")
    scope = actor_hospital(role, hospital)
    display = (display_name or "").strip() or None
    if display is not None and len(display) > _MAX_NAME:
        raise ValueError(f"the display name has at most {_MAX_NAME} characters")
    Actor(name, role, scope)  # role and hospital fit together
    return scope, display


async def _registered(hospitals: HospitalRegistry, scope: str) -> None:
    """A hospital role needs a registered hospital (read in the unit of work)."""
    if scope != ALL_HOSPITALS and await hospitals.get(scope) is None:
        raise ValueError(f"hospital {scope!r} is not registered; see `mrb hospital list`")


def _listing_scope(by: Actor, hospital: str | None) -> str | None:
    """Whose people `by` lists (None: everyone's): listing follows tokens (TOKENS), a
    security administrator for all, a hospital admin for their own hospital only."""
    if hospital is not None:
        by.authorize(Duty.TOKENS, hospital)
        return hospital
    by.authorize(Duty.TOKENS)
    return None if by.platform else by.hospital


def _audited_hospital(scope: str) -> str | None:
    """The hospital an audit entry names: none for a platform-wide person."""
    return None if scope == ALL_HOSPITALS else scope


async def map_user(
    uow: AccessUnitOfWork,
    by: Actor,
    *,
    issuer: str,
    subject: str,
    role: Role,
    hospital: str | None,
    display_name: str | None = None,
) -> OidcUser:
    """Map issuer + subject to a role and hospital (replacing and re-enabling an earlier
    mapping); ValueError names what is wrong with the request."""
    by.authorize(Duty.ISSUING)
    issuer = issuer_url(issuer, setting="the issuer")
    if len(issuer) > 300:
        raise ValueError("the issuer URL has at most 300 characters")
    if not subject or subject != subject.strip() or len(subject) > MAX_SUBJECT:
        raise ValueError(
            f"the subject is the issuer's `sub` claim exactly: 1-{MAX_SUBJECT} characters, "
            "no surrounding spaces"
        )
    scope, name = _person(subject, role, hospital, display_name)
    user = OidcUser(
        issuer=issuer,
        subject=subject,
        role=role.value,
        hospital=scope,
        display_name=name,
        created_by=by.name,
        created_at=datetime.now(UTC),
        disabled_at=None,
    )
    async with uow:
        await _registered(uow.hospitals, scope)
        before = await uow.users.get(issuer, subject)
        await uow.users.put(user)
        await uow.changes.record(
            by,
            action="user.map",
            hospital=_audited_hospital(scope),
            detail={
                "issuer": issuer,
                "subject": subject,
                "role": user.role,
                "user_hospital": scope,
                "display_name": name,
                "before": None
                if before is None
                else {
                    "role": before.role,
                    "user_hospital": before.hospital,
                    "disabled": before.disabled_at is not None,
                },
            },
        )
        await uow.commit()
    return user


async def listed(
    uow: AccessUnitOfWork,
    by: Actor,
    *,
    issuer: str | None = None,
    hospital: str | None = None,
    enabled_only: bool = False,
) -> list[OidcUser]:
    """Mapped people a security administrator sees (all), or a hospital admin (their own
    hospital's)."""
    hospital = _listing_scope(by, hospital)
    async with uow:
        return await uow.users.find(issuer=issuer, hospital=hospital, enabled_only=enabled_only)


async def disable(
    uow: AccessUnitOfWork,
    by: Actor,
    *,
    issuer: str,
    subject: str,
    reason: str,
) -> bool:
    """Disable a mapped person: their next request gets 403. False when already disabled."""
    reason = reason.strip()
    if not reason:
        raise ValueError("give a reason (it is recorded)")
    now = datetime.now(UTC)
    async with uow:
        found = await uow.users.get(issuer, subject)
        if found is None:
            raise NotFound("Unknown user", f"{subject[:80]!r} of {issuer[:100]!r} is not mapped")
        by.authorize(Duty.TOKENS, found.hospital)
        if not await uow.users.disable(issuer, subject, at=now):
            return False
        await uow.changes.record(
            by,
            action="user.disable",
            hospital=_audited_hospital(found.hospital),
            detail={"issuer": issuer, "subject": subject, "reason": reason[:200]},
        )
        await uow.commit()
    return True


async def actor_for(lookups: AccessLookups, identity: OidcIdentity) -> Actor:
    """The caller a verified OIDC identity is in mrb: its mapped role and hospital.

    NotAllowed when the issuer + subject is not mapped or is disabled, Unavailable when
    the user table cannot be read (never let a request through unchecked).
    """
    try:
        user = await lookups.user(identity.issuer, identity.subject)
    except RegisterUnavailable:
        raise Unavailable(
            "Authentication unavailable", "the user table cannot be read now"
        ) from None
    mapping = (
        f"`mrb user map --issuer {identity.issuer} --subject {identity.subject} "
        "--role R --hospital H`"
    )
    if user is None:
        raise NotAllowed(
            "User not mapped",
            f"you logged in as {identity.subject!r} at {identity.issuer}, which has no role "
            f"in mrb: an administrator must map it ({mapping})",
        )
    if user.disabled_at is not None:
        raise NotAllowed(
            "User disabled",
            f"{identity.subject!r} at {identity.issuer} was disabled in mrb on "
            f"{user.disabled_at:%Y-%m-%d %H:%M} UTC: an administrator must map it again "
            f"({mapping})",
        )
    try:
        return Actor(
            identity.subject,
            Role(user.role),
            user.hospital,
            token_id=f"oidc:{identity.token_id}" if identity.token_id else None,
        )
    except ValueError:
        raise NotAllowed(
            "User not mapped",
            f"the mapping of {identity.subject!r} is unusable: an administrator must map it "
            f"again ({mapping})",
        ) from None


# Local accounts: people who log in to the web pages with a username and password (the
# embedded set-up, or where no OpenID Connect issuer is run). Adding one grants access
# (ISSUING, as mapping does); disabling, re-enabling and resetting a password follow
# TOKENS, a hospital admin for their own hospital's people.


async def add_account(
    uow: WebUnitOfWork,
    by: Actor,
    *,
    username: str,
    password: str,
    role: Role,
    hospital: str | None,
    display_name: str | None = None,
) -> WebAccount:
    """A new local account; ValueError names what is wrong (never echoing the password)."""
    by.authorize(Duty.ISSUING)
    name = check_username(username)
    check_password(name, password)
    scope, display = _person(name, role, hospital, display_name)
    now = datetime.now(UTC)
    password_hash = await asyncio.to_thread(hash_password, password)
    account = WebAccount(
        username=name,
        password_hash=password_hash,
        role=role.value,
        hospital=scope,
        display_name=display,
        created_by=by.name,
        created_at=now,
        password_changed_at=now,
        disabled_at=None,
    )
    async with uow:
        await _registered(uow.hospitals, scope)
        if await uow.accounts.get(name) is not None:
            raise AccountExists(
                "Account exists",
                f"the account {name!r} exists; `mrb user reset --username {name}` sets a new "
                "password",
            )
        await uow.accounts.add(account)
        await uow.changes.record(
            by,
            action="user.add",
            hospital=_audited_hospital(scope),
            detail={
                "username": name,
                "role": account.role,
                "user_hospital": scope,
                "display_name": display,
            },
        )
        await uow.commit()
    return account


async def _account_for(uow: WebUnitOfWork, by: Actor, username: str) -> WebAccount:
    found = await uow.accounts.get(normalize_username(username))
    if found is None:
        raise NotFound("Unknown user", f"there is no local account {username[:64]!r}")
    by.authorize(Duty.TOKENS, found.hospital)
    return found


async def disable_account(uow: WebUnitOfWork, by: Actor, *, username: str, reason: str) -> bool:
    """Disable a local account and end its sessions at once. False when already
    disabled (`mrb user reset --enable` enables it again)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("give a reason (it is recorded)")
    async with uow:
        found = await _account_for(uow, by, username)
        changed = await uow.accounts.set_disabled(found.username, datetime.now(UTC))
        ended = await uow.sessions.delete_for(found.username)
        if changed:
            await uow.changes.record(
                by,
                action="user.disable",
                hospital=_audited_hospital(found.hospital),
                detail={"username": found.username, "reason": reason[:200], "sessions": ended},
            )
        await uow.commit()
    return changed


async def reset_password(
    uow: WebUnitOfWork, by: Actor, *, username: str, password: str, enable: bool = False
) -> WebAccount:
    """Set a new password (clearing failures and lock), end the account's sessions, and
    with `enable` enable a disabled account."""
    async with uow:
        found = await _account_for(uow, by, username)
        check_password(found.username, password)
        now = datetime.now(UTC)
        password_hash = await asyncio.to_thread(hash_password, password)
        await uow.accounts.set_password(found.username, password_hash, at=now)
        enabled = enable and await uow.accounts.set_disabled(found.username, None)
        ended = await uow.sessions.delete_for(found.username)
        await uow.changes.record(
            by,
            action="user.reset",
            hospital=_audited_hospital(found.hospital),
            detail={"username": found.username, "enabled": enabled, "sessions": ended},
        )
        await uow.commit()
    return found.model_copy(
        update={
            "password_hash": password_hash,
            "password_changed_at": now,
            "disabled_at": None if enabled else found.disabled_at,
            "failed_count": 0,
            "failed_since": None,
            "locked_until": None,
        }
    )


async def listed_accounts(
    uow: WebUnitOfWork, by: Actor, *, hospital: str | None = None
) -> list[WebAccount]:
    """Local accounts a security administrator sees (all), or a hospital admin (their own
    hospital's). The rows web sign-in through the issuer keeps for its sessions
    (`oidc:` names) are not local accounts: those people are listed as mapped people."""
    hospital = _listing_scope(by, hospital)
    async with uow:
        found = await uow.accounts.find(hospital=hospital)
    return [a for a in found if not a.username.startswith(OIDC_ACCOUNT_PREFIX)]
