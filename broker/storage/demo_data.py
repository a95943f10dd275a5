"""What `mrb demo` reads and resets directly: its certifications, the index's size, and a
result's current payload (the demo re-sends it amended)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, FromClause, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.security.payload_cipher import Sealed
from broker.storage.tables import (
    certification,
    payload,
    person,
    result,
    result_item,
    result_version,
)


async def clear_certifications(session: AsyncSession) -> None:
    """Every hospital's certifications (the demo certifies afresh for today)."""
    await session.execute(delete(certification))


@dataclass(frozen=True)
class IndexSize:
    results: int
    versions: int
    people: int  # surviving (not merged into another)
    items: int


async def index_size(session: AsyncSession) -> IndexSize:
    async def count(table: FromClause, *where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(table).where(*where)
        return int((await session.execute(query)).scalar_one())

    return IndexSize(
        results=await count(result),
        versions=await count(result_version),
        people=await count(person, person.c.merged_into.is_(None)),
        items=await count(result_item),
    )


async def current_payload(session: AsyncSession, result_id: str) -> tuple[Sealed, str]:
    """The sealed bytes of the result's current version, and the message id they are
    bound to (the cipher's associated data)."""
    row = (
        await session.execute(
            select(payload)
            .join(result_version, result_version.c.payload_id == payload.c.id)
            .join(result, result.c.id == result_version.c.result_id)
            .where(result.c.id == result_id, result_version.c.is_current.is_(True))
        )
    ).one()
    return Sealed(row.key_id, row.algorithm, row.nonce, row.ciphertext), row.message_id
