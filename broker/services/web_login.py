"""Logging in to the web pages with a local account: a server-side session, its expiry,
lockout after repeated failures, logout; every login, failure, lockout and logout audited.

A failed login answers the same whatever went wrong (unknown user, wrong password, locked
or disabled account), after the same argon2 work, so that the answer does not tell which
usernames exist. The session's account is read on every request: disabling it or
resetting its password ends its sessions at once.

A person of the OpenID Connect issuer (broker/security/oidc_login.py verified them) gets a
session in the same store (`login_oidc`). A session belongs to a web account, so they have
one too, made at their first sign-in: named `oidc:` + a hash of issuer and subject (no
local username has a colon), with no password (`!oidc:` + the subject where the hash
would be: it never verifies, and local login refuses these names). What they may do is
read from `oidc_user` on every request, as for their API tokens: disabling or remapping
them there takes effect at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime

import structlog

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.errors import NotAllowed, Unauthenticated
from broker.domain.sessions import (
    MAX_PASSWORD_LENGTH,
    Failures,
    LockoutPolicy,
    SessionPolicy,
    after_failure,
    just_locked,
    needs_touch,
    normalize_username,
    session_alive,
    session_expires_at,
)
from broker.ports.web import WebAccount, WebSession, WebUnitOfWork
from broker.security.passwords import csrf_token, new_session_id, session_id_hash, verify_password

log = structlog.get_logger(__name__)

SESSION_ID_PREFIX = "session:"  # Actor.token_id of a session: never the id itself
OIDC_ACCOUNT_PREFIX = "oidc:"  # web_account.username of an issuer's person
OIDC_CREDENTIAL_PREFIX = "!oidc:"  # their password_hash: "no password", then the subject
MAX_OIDC_SUBJECT = 200 - len(OIDC_CREDENTIAL_PREFIX)  # web_account.password_hash holds 200


def oidc_account_name(issuer: str, subject: str) -> str:
    """The web account of an issuer's person: 45 characters, never a local username."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:40]
    return OIDC_ACCOUNT_PREFIX + digest


def oidc_subject(account: WebAccount) -> str | None:
    """The issuer's subject an account stands for; None for a local account."""
    if account.username.startswith(OIDC_ACCOUNT_PREFIX) and account.password_hash.startswith(
        OIDC_CREDENTIAL_PREFIX
    ):
        return account.password_hash[len(OIDC_CREDENTIAL_PREFIX) :]
    return None


def login_failed(lockout: LockoutPolicy) -> Unauthenticated:
    minutes = int(lockout.lockout.total_seconds() // 60)
    return Unauthenticated(
        "Sign-in failed",
        "wrong username or password, or the account is disabled or locked "
        f"({lockout.max_failures} failed sign-ins lock it for {minutes} minutes); "
        "an administrator can reset it with `mrb user reset`",
    )


def session_ended(why: str) -> Unauthenticated:
    return Unauthenticated("Session ended", f"{why}: sign in again at /login")


@dataclass(frozen=True)
class LoggedIn:
    """A new session. `session_id` goes into the cookie and nowhere else."""

    session_id: str
    csrf_token: str
    actor: Actor
    display_name: str | None
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    actor: Actor
    id_hash: str
    display_name: str | None
    expires_at: datetime


def actor_of(account: WebAccount, id_hash: str | None = None) -> Actor:
    """The caller an account is: its role and hospital, as an API token's would be."""
    token = f"{SESSION_ID_PREFIX}{id_hash[:16]}" if id_hash else None
    return Actor(account.username, Role(account.role), account.hospital, token_id=token)


def _scope(actor: Actor) -> str | None:
    return None if actor.hospital == ALL_HOSPITALS else actor.hospital


async def login(
    uow: WebUnitOfWork,
    username: str,
    password: str,
    *,
    now: datetime,
    sessions: SessionPolicy,
    lockout: LockoutPolicy,
) -> LoggedIn:
    name = normalize_username(username)[:64]
    password = password[: MAX_PASSWORD_LENGTH + 1]  # longer never matches; bound the work
    async with uow:
        # An issuer's person has no password: their name is as unknown here as any other.
        local = name and not name.startswith(OIDC_ACCOUNT_PREFIX)
        account = await uow.accounts.get(name, for_update=True) if local else None
        # Always verify (against a dummy hash for an unknown user): same time either way.
        matches = await asyncio.to_thread(
            verify_password, account.password_hash if account else None, password
        )
        if account is None:
            log.warning("web_login.unknown_user", username=name[:64])
            raise login_failed(lockout)
        try:
            actor = actor_of(account)
        except ValueError:  # an unusable stored role/hospital: never let it in
            log.error("web_login.unusable_account", username=name)
            raise login_failed(lockout) from None
        refused = (
            "disabled"
            if account.disabled_at is not None
            else "locked"
            if account.failures.locked(now)
            else None
        )
        if refused is not None:
            await uow.changes.record(
                actor,
                action="web.login.refused",
                hospital=_scope(actor),
                detail={"username": name, "reason": refused, "password_matched": matches},
            )
            await uow.commit()
            raise login_failed(lockout)
        if not matches:
            before = account.failures
            after = after_failure(before, now, lockout)
            await uow.accounts.set_failures(name, after)
            await uow.changes.record(
                actor,
                action="web.login.failure",
                hospital=_scope(actor),
                detail={"username": name, "failures": after.count},
            )
            if just_locked(before, after, now):
                await uow.changes.record(
                    actor,
                    action="web.login.lockout",
                    hospital=_scope(actor),
                    detail={
                        "username": name,
                        "locked_until": after.locked_until.isoformat()
                        if after.locked_until
                        else None,
                    },
                )
            await uow.commit()
            raise login_failed(lockout)
        if account.failed_count or account.locked_until is not None:
            await uow.accounts.set_failures(name, Failures())
        # Expired sessions of everyone are dropped here, so the table does not grow.
        await uow.sessions.delete_expired(
            idle_before=now - sessions.idle, created_before=now - sessions.absolute
        )
        session_id = new_session_id()  # a fresh id at every login: no session fixation
        id_hash = session_id_hash(session_id)
        await uow.sessions.add(
            WebSession(id_hash=id_hash, username=name, created_at=now, last_seen_at=now)
        )
        actor = actor_of(account, id_hash)
        await uow.changes.record(
            actor, action="web.login", hospital=_scope(actor), detail={"username": name}
        )
        await uow.commit()
    return LoggedIn(
        session_id,
        csrf_token(session_id),
        actor,
        account.display_name,
        session_expires_at(now, now, sessions),
    )


async def active(
    uow: WebUnitOfWork,
    session_id: str,
    *,
    now: datetime,
    policy: SessionPolicy,
    oidc_issuer: str | None = None,
) -> ActiveSession:
    """The session of a cookie, if it is alive and its account enabled (Unauthenticated
    otherwise, ending the session); its last use is written at most every minute. An
    issuer's person's session also needs `oidc_issuer` to be theirs still, and their
    `oidc_user` mapping enabled."""
    id_hash = session_id_hash(session_id)
    async with uow:
        session = await uow.sessions.get(id_hash)
        if session is None:
            raise session_ended("the session expired or was ended")
        account = await uow.accounts.get(session.username)
        why = None
        if account is None or account.disabled_at is not None:
            why = "the account was disabled"
        elif account.password_changed_at > session.created_at:
            why = "the password was reset"
        elif not session_alive(session.created_at, session.last_seen_at, now, policy):
            why = "the session expired"
        if why is not None or account is None:
            await uow.sessions.delete(id_hash)
            await uow.commit()
            raise session_ended(why or "the session ended")
        subject = oidc_subject(account)
        actor = None
        if subject is not None:
            actor, why = await _oidc_actor(uow, account, subject, oidc_issuer, id_hash)
            if actor is None:
                await uow.sessions.delete(id_hash)
                await uow.commit()
                raise session_ended(why)
        if needs_touch(session.last_seen_at, now, policy):
            await uow.sessions.touch(id_hash, now)
            await uow.commit()
            session = session.model_copy(update={"last_seen_at": now})
        if actor is None:
            try:
                actor = actor_of(account, id_hash)
            except ValueError:
                raise session_ended("the account is unusable") from None
    return ActiveSession(
        actor,
        id_hash,
        account.display_name,
        session_expires_at(session.created_at, session.last_seen_at, policy),
    )


async def logout(uow: WebUnitOfWork, session: ActiveSession) -> None:
    """End the session (audited)."""
    async with uow:
        if await uow.sessions.delete(session.id_hash):
            await uow.changes.record(
                session.actor,
                action="web.logout",
                hospital=_scope(session.actor),
                detail={"username": session.actor.name},
            )
        await uow.commit()


# Sign-in through the OpenID Connect issuer: the identity comes verified from
# broker/security/oidc_login.py; here it becomes a session, exactly as a local login's.


def _oidc_refused(subject: str, issuer: str, why: str) -> NotAllowed:
    mapping = f"`mrb user map --issuer {issuer} --subject {subject} --role R --hospital H`"
    if why == "unmapped":
        return NotAllowed(
            "User not mapped",
            f"you signed in as {subject!r} at {issuer}, which has no role in mrb: an "
            f"administrator must map it ({mapping})",
        )
    if why == "disabled":
        return NotAllowed(
            "User disabled",
            f"{subject!r} at {issuer} is disabled in mrb: an administrator must map it "
            f"again ({mapping})",
        )
    return NotAllowed(
        "User not mapped",
        f"the mapping of {subject!r} at {issuer} is unusable: an administrator must map it "
        f"again ({mapping})",
    )


async def _oidc_actor(
    uow: WebUnitOfWork, account: WebAccount, subject: str, issuer: str | None, id_hash: str
) -> tuple[Actor | None, str]:
    """The caller an issuer's person's session is now, or None and why it must end."""
    if issuer is None or account.username != oidc_account_name(issuer, subject):
        return None, "sign-in through this OpenID Connect issuer is no longer configured"
    user = await uow.users.get(issuer, subject)
    if user is None or user.disabled_at is not None:
        return None, "the user was disabled"
    try:
        token = f"{SESSION_ID_PREFIX}{id_hash[:16]}"
        return Actor(subject, Role(user.role), user.hospital, token_id=token), ""
    except ValueError:
        return None, "the user's mapping is unusable"


async def login_oidc(
    uow: WebUnitOfWork,
    *,
    issuer: str,
    subject: str,
    display_name: str | None,
    now: datetime,
    sessions: SessionPolicy,
) -> LoggedIn:
    """A session for a person the issuer vouched for, if `oidc_user` maps them to an
    enabled role (NotAllowed saying why not: an unmapped person is logged, a disabled one
    audited too). The login is audited as a local one is (`web.login`, with `method`)."""
    if len(subject) > MAX_OIDC_SUBJECT:
        log.warning("web_login.oidc_subject_too_long", issuer=issuer, length=len(subject))
        raise NotAllowed(
            "User not supported",
            f"subjects of more than {MAX_OIDC_SUBJECT} characters cannot sign in to the web "
            "pages; use a local account",
        )
    name = oidc_account_name(issuer, subject)
    async with uow:
        user = await uow.users.get(issuer, subject)
        if user is None:
            log.warning("web_login.oidc_unmapped", issuer=issuer, subject=subject[:255])
            raise _oidc_refused(subject, issuer, "unmapped")
        try:
            actor = Actor(subject, Role(user.role), user.hospital)
        except ValueError:
            log.error("web_login.oidc_unusable_mapping", issuer=issuer, subject=subject)
            raise _oidc_refused(subject, issuer, "unusable") from None
        account = await uow.accounts.get(name, for_update=True)
        refused = (
            "disabled"
            if user.disabled_at is not None
            or (account is not None and account.disabled_at is not None)
            # A password set on it (`mrb user reset`) would make it a local account that
            # no longer follows oidc_user: never sign in to that.
            else "altered"
            if account is not None and oidc_subject(account) != subject
            else None
        )
        if refused is not None:
            await uow.changes.record(
                actor,
                action="web.login.refused",
                hospital=_scope(actor),
                detail={
                    "method": "oidc",
                    "issuer": issuer,
                    "subject": subject,
                    "reason": refused,
                },
            )
            await uow.commit()
            raise _oidc_refused(subject, issuer, refused)
        if account is None:
            account = WebAccount(
                username=name,
                password_hash=OIDC_CREDENTIAL_PREFIX + subject,
                role=user.role,
                hospital=user.hospital,
                display_name=user.display_name or display_name,
                created_by=f"oidc-login:{issuer}"[:200],
                created_at=now,
                password_changed_at=now,
                disabled_at=None,
            )
            await uow.accounts.add(account)
        await uow.sessions.delete_expired(
            idle_before=now - sessions.idle, created_before=now - sessions.absolute
        )
        session_id = new_session_id()
        id_hash = session_id_hash(session_id)
        await uow.sessions.add(
            WebSession(id_hash=id_hash, username=name, created_at=now, last_seen_at=now)
        )
        actor = Actor(
            subject, Role(user.role), user.hospital, token_id=f"{SESSION_ID_PREFIX}{id_hash[:16]}"
        )
        await uow.changes.record(
            actor,
            action="web.login",
            hospital=_scope(actor),
            detail={"method": "oidc", "issuer": issuer, "subject": subject, "username": name},
        )
        await uow.commit()
    return LoggedIn(
        session_id,
        csrf_token(session_id),
        actor,
        user.display_name or display_name,
        session_expires_at(now, now, sessions),
    )
