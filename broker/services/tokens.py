"""Issuing, listing and revoking API tokens, and the revocation check on every request.

Issuing signs with the issuer key and records the token (never its text) in the same
transaction, so a token exists only once it is recorded; the API refuses tokens it does
not find recorded. Revocation takes effect without a restart: each API process asks the
database for a token's state and relies on the answer for at most
MRB_TOKEN_REVOCATION_CACHE_SECONDS (a revoked answer is kept: revocation is final).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from broker.domain.actors import ALL_HOSPITALS, Actor, Duty, Role
from broker.domain.errors import NotFound, Unavailable
from broker.ports.access import AccessLookups, AccessUnitOfWork, RegisterUnavailable, TokenRecord
from broker.security.tokens import InvalidToken, IssuedToken, TokenIssuer, actor_hospital


class TokenRevoked(InvalidToken):
    """The token was revoked (`mrb token revoke`, or the tokens API)."""


async def issue(
    uow: AccessUnitOfWork,
    issuer: TokenIssuer,
    by: Actor,
    *,
    subject: str,
    role: Role,
    hospital: str | None,
    ttl: timedelta | None = None,
    machine: bool = False,
) -> IssuedToken:
    """Sign a token and record it; ValueError names what is wrong with the request."""
    by.authorize(Duty.ISSUING)
    scope = actor_hospital(role, hospital)
    async with uow:
        if scope != ALL_HOSPITALS and await uow.hospitals.get(scope) is None:
            raise ValueError(f"hospital {scope!r} is not registered; see `mrb hospital list`")
        issued = issuer.issue(subject, role, scope, ttl=ttl, machine=machine)
        await uow.tokens.record(issued, issued_by=by.name)
        await uow.changes.record(
            by,
            action="token.issue",
            hospital=None if scope == ALL_HOSPITALS else scope,
            detail={
                "jti": issued.jti,
                "subject": issued.subject,
                "role": issued.role.value,
                "token_hospital": issued.hospital,
                "kind": issued.kind.value,
                "key_id": issued.key_id,
                "expires_at": issued.expires_at.isoformat(),
            },
        )
        await uow.commit()
    return issued


async def listed(
    uow: AccessUnitOfWork,
    by: Actor,
    *,
    hospital: str | None = None,
    subject: str | None = None,
    live_only: bool = False,
) -> list[TokenRecord]:
    """Tokens a security administrator sees (all), or a hospital admin (their hospital's)."""
    scope = _scope(by, hospital)
    async with uow:
        return await uow.tokens.find(
            hospital=scope, subject=subject, live_at=datetime.now(UTC) if live_only else None
        )


async def revoke(
    uow: AccessUnitOfWork,
    by: Actor,
    *,
    reason: str,
    jti: str | None = None,
    subject: str | None = None,
    hospital: str | None = None,
) -> list[str]:
    """Revoke one token (`jti`) or every live token of `subject` (at `hospital`, if given).

    Returns the jtis revoked by this call (none when they already were).
    """
    if (jti is None) == (subject is None):
        raise ValueError("name one token (its jti) or one subject, not both or neither")
    reason = reason.strip()
    if not reason:
        raise ValueError("give a reason for the revocation (it is recorded)")
    now = datetime.now(UTC)
    async with uow:
        if jti is not None:
            found = await uow.tokens.get(jti)
            if found is None:
                raise NotFound("Unknown token", f"no token {jti[:40]!r} was issued")
            by.authorize(Duty.TOKENS, found.hospital)
            targets = [found]
        else:
            scope = _scope(by, hospital)
            targets = await uow.tokens.find(hospital=scope, subject=subject, live_at=now)
        revoked = await uow.tokens.revoke(
            [t.jti for t in targets], by=by.name, reason=reason[:200], at=now
        )
        if revoked:
            await uow.changes.record(
                by,
                action="token.revoke",
                hospital=hospital if jti is None else targets[0].hospital,
                detail={"jtis": revoked, "subject": subject, "reason": reason[:200]},
            )
        await uow.commit()
    return revoked


def _scope(by: Actor, hospital: str | None) -> str | None:
    """The hospital whose tokens `by` may see: a hospital admin's own, whatever is asked."""
    if hospital is not None:
        by.authorize(Duty.TOKENS, hospital)
        return hospital
    by.authorize(Duty.TOKENS)
    return None if by.platform else by.hospital


class RevocationCheck:
    """Refuses tokens that are revoked or were never recorded.

    Looks each token up by its primary key; a "still good" answer is reused for at most
    `cache_seconds` (0: every request asks), a "revoked" one for good. The cache holds at
    most `max_entries` tokens, least recently checked dropped first.
    """

    def __init__(
        self,
        lookups: AccessLookups,
        *,
        cache_seconds: float,
        max_entries: int = 10_000,
    ) -> None:
        self._lookups = lookups
        self._ttl = cache_seconds
        self._max = max_entries
        self._seen: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # jti -> revoked, when

    async def check(self, jti: str) -> None:
        now = time.monotonic()
        cached = self._seen.get(jti)
        if cached is not None:
            revoked, at = cached
            if revoked:
                raise TokenRevoked("token revoked: ask for a new one")
            if now - at < self._ttl:
                return
        try:
            found = await self._lookups.token_state(jti)
        except RegisterUnavailable:
            raise Unavailable(
                "Authentication unavailable", "the token register cannot be read now"
            ) from None
        if not found.recorded:
            raise InvalidToken("the token is not in the token register: it was never issued here")
        self._seen[jti] = (found.revoked, now)
        self._seen.move_to_end(jti)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        if found.revoked:
            raise TokenRevoked("token revoked: ask for a new one")

    def revoked(self, jtis: list[str]) -> None:
        """Tokens this process just revoked: refused here at once, without a look-up."""
        for jti in jtis:
            self._seen[jti] = (True, time.monotonic())
            self._seen.move_to_end(jti)
