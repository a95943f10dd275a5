"""The record of issued API tokens (issued_token): never the token text, only its facts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.ports.access import TokenRecord as TokenRecord
from broker.ports.access import TokenState as State
from broker.security.tokens import IssuedToken
from broker.storage.tables import issued_token


async def record(session: AsyncSession, token: IssuedToken, *, issued_by: str) -> None:
    await session.execute(
        issued_token.insert().values(
            jti=token.jti,
            subject=token.subject,
            role=token.role.value,
            hospital=token.hospital,
            kind=token.kind.value,
            key_id=token.key_id,
            issued_at=token.issued_at,
            expires_at=token.expires_at,
            issued_by=issued_by,
        )
    )


async def state(session: AsyncSession, jti: str) -> State:
    row = (
        await session.execute(select(issued_token.c.revoked_at).where(issued_token.c.jti == jti))
    ).first()
    if row is None:
        return State(recorded=False, revoked=False)
    return State(recorded=True, revoked=row.revoked_at is not None)


async def get(session: AsyncSession, jti: str) -> TokenRecord | None:
    row = (await session.execute(select(issued_token).where(issued_token.c.jti == jti))).first()
    return TokenRecord.model_validate(dict(row._mapping)) if row else None


async def find(
    session: AsyncSession,
    *,
    hospital: str | None = None,
    subject: str | None = None,
    live_at: datetime | None = None,
    limit: int = 1000,
) -> list[TokenRecord]:
    """Tokens newest first; `live_at`: only those neither expired nor revoked then."""
    query = select(issued_token).order_by(issued_token.c.issued_at.desc()).limit(limit)
    if hospital is not None:
        query = query.where(issued_token.c.hospital == hospital)
    if subject is not None:
        query = query.where(issued_token.c.subject == subject)
    if live_at is not None:
        query = query.where(
            issued_token.c.revoked_at.is_(None), issued_token.c.expires_at > live_at
        )
    return [TokenRecord.model_validate(dict(r._mapping)) for r in await session.execute(query)]


async def revoke(
    session: AsyncSession, jtis: list[str], *, by: str, reason: str, at: datetime
) -> list[str]:
    """Revoke those not revoked yet; returns the jtis this call revoked."""
    if not jtis:
        return []
    pending = list(
        (
            await session.scalars(
                select(issued_token.c.jti).where(
                    issued_token.c.jti.in_(jtis), issued_token.c.revoked_at.is_(None)
                )
            )
        ).all()
    )
    if pending:
        await session.execute(
            update(issued_token)
            .where(issued_token.c.jti.in_(pending), issued_token.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_by=by, reason=reason)
        )
    return sorted(pending)
