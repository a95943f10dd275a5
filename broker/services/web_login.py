"""Logging in to the web pages with a local account: a server-side session, its expiry,
lockout after repeated failures, logout; every login, failure, lockout and logout audited.

A failed login answers the same whatever went wrong (unknown user, wrong password, locked
or disabled account), after the same argon2 work, so that the answer does not tell which
usernames exist. The session's account is read on every request: disabling it or
resetting its password ends its sessions at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import structlog

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.errors import Unauthenticated
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
        account = await uow.accounts.get(name, for_update=True) if name else None
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
    uow: WebUnitOfWork, session_id: str, *, now: datetime, policy: SessionPolicy
) -> ActiveSession:
    """The session of a cookie, if it is alive and its account enabled (Unauthenticated
    otherwise, ending the session); its last use is written at most every minute."""
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
        if needs_touch(session.last_seen_at, now, policy):
            await uow.sessions.touch(id_hash, now)
            await uow.commit()
            session = session.model_copy(update={"last_seen_at": now})
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
