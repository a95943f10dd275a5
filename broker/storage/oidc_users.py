"""The OpenID Connect user table (oidc_user): issuer + subject -> role and hospital."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.ports.access import OidcUser as OidcUser
from broker.storage.tables import oidc_user


async def get(session: AsyncSession, issuer: str, subject: str) -> OidcUser | None:
    row = (
        await session.execute(
            select(oidc_user).where(oidc_user.c.issuer == issuer, oidc_user.c.subject == subject)
        )
    ).first()
    return OidcUser.model_validate(dict(row._mapping)) if row else None


async def put(session: AsyncSession, user: OidcUser) -> None:
    """Insert the row, or replace the one of the same issuer and subject."""
    values = user.model_dump()
    found = await get(session, user.issuer, user.subject)
    if found is None:
        await session.execute(oidc_user.insert().values(**values))
        return
    await session.execute(
        update(oidc_user)
        .where(oidc_user.c.issuer == user.issuer, oidc_user.c.subject == user.subject)
        .values(**values)
    )


async def disable(session: AsyncSession, issuer: str, subject: str, *, at: datetime) -> bool:
    """Disable an enabled user; False when there is none (unknown, or disabled already)."""
    result = await session.execute(
        update(oidc_user)
        .where(
            oidc_user.c.issuer == issuer,
            oidc_user.c.subject == subject,
            oidc_user.c.disabled_at.is_(None),
        )
        .values(disabled_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def find(
    session: AsyncSession,
    *,
    issuer: str | None = None,
    hospital: str | None = None,
    enabled_only: bool = False,
    limit: int = 1000,
) -> list[OidcUser]:
    """Users by issuer and subject."""
    query = select(oidc_user).order_by(oidc_user.c.issuer, oidc_user.c.subject).limit(limit)
    if issuer is not None:
        query = query.where(oidc_user.c.issuer == issuer)
    if hospital is not None:
        query = query.where(oidc_user.c.hospital == hospital)
    if enabled_only:
        query = query.where(oidc_user.c.disabled_at.is_(None))
    return [OidcUser.model_validate(dict(r._mapping)) for r in await session.execute(query)]
